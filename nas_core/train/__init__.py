"""Train/evaluate loops and per-epoch checkpoints (no logging framework inside)."""
from nas_core.train.checkpoint import (CheckpointCallback, CorruptCheckpointError, CorruptCheckpointWarning,
                                       latest_good_checkpoint, list_checkpoints, load_checkpoint,
                                       resume_state, run_resumable, save_checkpoint)
from nas_core.train.loop import default_progress, evaluate, make_loader, reseed, train_one_epoch

__all__ = ["train_one_epoch", "evaluate", "make_loader", "reseed", "default_progress", "save_checkpoint",
           "load_checkpoint", "list_checkpoints", "latest_good_checkpoint", "resume_state",
           "run_resumable", "CheckpointCallback", "CorruptCheckpointError", "CorruptCheckpointWarning"]
