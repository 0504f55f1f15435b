"""SPSD figures: PNG + PDF written, byte-identical reruns, clear errors on empty input."""
import pytest

from drseg.errors import DrsegInputError
from drseg.reports import spsd_figures as figs

RETENTION = [{"ratio": 0.5, "channels": 2, "top": 40.0, "bottom": 20.0},
             {"ratio": 1.0, "channels": 4, "top": 45.0, "bottom": 45.0}]
MASKING = [{"channel": c, "drop": d, "score": s, "semantic": s > 0.5}
           for c, (d, s) in enumerate([(1.5, 0.9), (-0.5, 0.1), (0.2, 0.7), (0.0, 0.3)])]


def test_figures_written_and_byte_stable(tmp_path):
    outs = []
    for run in ("a", "b"):
        d = tmp_path / run
        outs.append(figs.plot_retention(RETENTION, d / "ret")
                    + figs.plot_masking(MASKING, d / "mask", full_miou=45.0)
                    + figs.plot_score_vs_drop(MASKING, d / "scatter", 0.8, 0.2))
    assert [p.name for p in outs[0]] == ["ret.png", "ret.pdf", "mask.png", "mask.pdf",
                                         "scatter.png", "scatter.pdf"]
    for a, b in zip(*outs):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 1000


def test_empty_inputs_raise(tmp_path):
    with pytest.raises(DrsegInputError, match="retention"):
        figs.plot_retention([], tmp_path / "r")
    with pytest.raises(DrsegInputError, match="masking"):
        figs.plot_masking([], tmp_path / "m", full_miou=1.0)
    with pytest.raises(DrsegInputError, match="not found"):
        figs.read_json(tmp_path / "missing.json")
