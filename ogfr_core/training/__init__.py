"""Training: the loop (SGD, warm-up + cosine, AMP, DDP, resume, dvclive), checkpoints, label checks."""
from .checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from .labels import MissingLabelsError, check_training_labels
from .loop import NonFiniteLossError, Trainer
from .schedule import build_scheduler, lr_factor

__all__ = ["CheckpointError", "load_model", "read_checkpoint", "save_checkpoint", "MissingLabelsError",
           "check_training_labels", "NonFiniteLossError", "Trainer", "build_scheduler", "lr_factor"]
