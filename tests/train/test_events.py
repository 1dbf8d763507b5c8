"""Console times and ETA, and the HParams every run writes (read with TensorBoard's reader)."""

from __future__ import annotations

import logging
import random

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from opmask.config import ConfigError, load_config
from opmask.train.events import EtaEstimator, EventWriter, hparams_from_cfg
from tests.conftest import SHAPES_OPMASK


def _busy_machine_times(n: int, seed: int = 0) -> list[float]:
    """0.5 s iterations with +-5 % jitter; every 7th takes 6x (another job), every 50th 40x."""
    rng = random.Random(seed)
    times = []
    for i in range(n):
        t = 0.5 * rng.uniform(0.95, 1.05)
        times.append(t * (40 if i % 50 == 49 else 6 if i % 7 == 6 else 1))
    return times


def test_eta_is_stable_under_outliers():
    est = EtaEstimator(window=200)
    etas = []
    for it, t in enumerate(_busy_machine_times(600)):
        est.add(t)
        if it >= 20:
            etas.append((est.eta_seconds(it, 1000) / (1000 - it - 1)))
    # every estimate of seconds/iteration stays within 6 % of the true 0.5 s, although single
    # iterations took up to 20 s; the last iteration's time would say anything from 0.48 to 21
    assert all(abs(s - 0.5) < 0.03 for s in etas), (min(etas), max(etas))


def test_eta_follows_a_lasting_change_and_skips_the_first_iteration():
    est = EtaEstimator(window=20)
    est.add(30.0)  # first iteration: allocation, loader start
    assert est.seconds_per_iter() == 30.0  # the only measurement so far
    for _ in range(10):
        est.add(1.0)
    assert est.seconds_per_iter() == 1.0  # the warm-up is gone, not averaged in
    for _ in range(11):
        est.add(2.0)  # the machine became twice as slow, for good
    assert est.seconds_per_iter() == 2.0
    assert est.eta_seconds(99, 100) == 0.0 and est.eta_seconds(97, 100) == 4.0


def test_console_shows_the_smoothed_time_and_eta(tmp_path, caplog):
    events = EventWriter(
        str(tmp_path / "metrics.json"), str(tmp_path / "tensorboard"), start_iter=0, max_iter=101
    )
    with caplog.at_level(logging.INFO, logger="opmask.train"):
        for it, t in enumerate([9.0] + [1.0] * 40 + [25.0]):
            events.log_train(it, {"loss_a": 1.0}, 0.01, t, 0.5, console=it == 41)
    events.close()
    line = caplog.records[-1].getMessage()
    # 59 iterations left at the median 1.0 s: 0:00:59, not 59 x 25 s
    assert line.startswith("eta: 0:00:59  iter: 42/101") and "time: 1.0000" in line, line


def test_run_writes_hparams_that_tensorboard_reads(tmp_path):
    cfg = load_config(SHAPES_OPMASK, ["SEED", "7", "SOLVER.STEPS", "(4, 5)"])
    hp = hparams_from_cfg(cfg, ["SOLVER.STEPS", "SEED"])
    assert hp["SEED"] == 7 and hp["SOLVER.STEPS"] == "(4, 5)" and list(hp).count("SEED") == 1
    with pytest.raises(ConfigError, match="'SOLVER.NOPE', which is not a config key"):
        hparams_from_cfg(cfg, ["SOLVER.NOPE"])
    events = EventWriter(
        str(tmp_path / "metrics.json"), str(tmp_path / "tensorboard"), start_iter=0, max_iter=10
    )
    events.log_hparams(hp)
    events.log_eval(9, {"bbox": {"AP": 12.5}, "segm_weak": {"AP": 3.25}})
    events.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    experiment = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == list(hp)
    assert {m.name.tag for m in experiment.metric_infos} == {
        "bbox/AP",
        "segm/AP",
        "segm_strong/AP",
        "segm_weak/AP",
    }
    start = hp_metadata.parse_session_start_info_plugin_data(
        content[hp_metadata.SESSION_START_INFO_TAG]
    )
    assert start.hparams["SEED"].number_value == 7
    assert start.hparams["EXP.PS"].string_value == cfg.EXP.PS
    assert acc.Scalars("segm_weak/AP")[-1].value == 3.25
