"""Training for experiments: generated tasks that need context, local images, the training loop."""

from erf.training.tasks import (TASKS, ImageData, Task, list_tasks, load_dataset, load_images, make_generator,
                                make_task)
from erf.training.train import (OPTIMIZERS, DenseHead, TrainResult, checkpoint_steps, dense_head, evaluate,
                                save_state_dict, train)

__all__ = ["TASKS", "ImageData", "Task", "list_tasks", "load_dataset", "load_images", "make_generator", "make_task",
           "OPTIMIZERS", "DenseHead", "TrainResult", "checkpoint_steps", "dense_head", "evaluate", "save_state_dict",
           "train"]
