"""drseg: a reproducible pipeline for DR-Seg, open-vocabulary semantic segmentation of
remote-sensing images ("DR-Seg: Decouple and Rectify ...", 2026).

Importing drseg sets ``HF_HUB_OFFLINE=1``: no stage ever downloads weights from a hub.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

__version__ = "0.1.0"
