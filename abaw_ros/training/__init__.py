"""Losses, the training loop (single process or torchrun DDP) and evaluation."""
from abaw_ros.training.config import DataConfig, TrainConfig, load_train_config
from abaw_ros.training.evaluation import EvalResult, metrics_table, predict, score, write_submissions
from abaw_ros.training.loop import TrainResult, train
from abaw_ros.training.losses import LossConfig, MultiTaskLoss

__all__ = [
    "DataConfig", "EvalResult", "LossConfig", "MultiTaskLoss", "TrainConfig", "TrainResult",
    "load_train_config", "metrics_table", "predict", "score", "train", "write_submissions",
]
