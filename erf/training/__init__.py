"""Training for experiments: generated tasks that need context, local images, the training loop.

Modules: ``tasks`` (the task table ``TASKS``, ``make_task`` and the generated tasks), ``images``
(local images: ``load_dataset``, ``load_images``), ``seeds`` (named random streams), ``train``
(the training loop, checkpoints, ``DenseHead``).
"""

from erf.training.images import ImageData, load_dataset, load_images
from erf.training.seeds import make_generator
from erf.training.tasks import TASKS, Task, list_tasks, make_task
from erf.training.train import (OPTIMIZERS, DenseHead, TrainResult, checkpoint_steps, dense_head, evaluate,
                                save_state_dict, train)

__all__ = ["TASKS", "ImageData", "Task", "list_tasks", "load_dataset", "load_images", "make_generator", "make_task",
           "OPTIMIZERS", "DenseHead", "TrainResult", "checkpoint_steps", "dense_head", "evaluate", "save_state_dict",
           "train"]
