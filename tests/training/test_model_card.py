"""The model card's training section for a run continued from another, with the upload mix and the PSNR loss."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from tests.server import MODELS
from training.model_card import render
from training.uploads import UploadMix


def _manifest() -> dict[str, Any]:
    """The committed mnist manifest as a run of its own: trained at 0.002, continued from nothing."""
    manifest: dict[str, Any] = json.loads((MODELS / "mnist" / "manifest.json").read_text())
    manifest["training"] = {**manifest["training"], "learning_rate": 0.002}
    manifest["training"].pop("continued_from", None)
    return manifest


def test_card_says_what_a_continued_run_trained_with() -> None:
    manifest = _manifest()
    earlier = {**manifest["training"], "loss": "mse", "uploads": asdict(UploadMix(0.35, 0.08, 0.08, 0.08))}
    manifest["training"] |= {
        "epochs": 15,
        "loss": "psnr",
        "uploads": asdict(UploadMix()),
        "continued_from": {"run": "runs/mnist-mix", "config": earlier, "autoencoder": {"epochs_run": 30}},
    }
    card = render(manifest)
    assert "15 epochs, batch 128" in card
    assert "loss: each image's PSNR, averaged" in card
    assert "- Continued from a run of 30 epochs (Adam at 0.002 on a cosine, mse loss, 35% moved" in card
    assert "- Images like callers send among the inputs: 20% moved (shifted up to 4 px or rotated up to 20°" in card
    assert "12% clean (the target is the input), 3% faded scans and 3% JPEGs at quality 10–60" in card


def test_card_tells_a_chain_of_continued_runs_earliest_first() -> None:
    manifest = _manifest()
    first = {**manifest["training"], "loss": "mse", "uploads": None}
    second = {**manifest["training"], "loss": "psnr", "learning_rate": 0.001, "uploads": asdict(UploadMix())}
    second["noise"] = {**second["noise"], "weights": [0.5, 0.2, 0.1, 0.1, 0.1]}
    manifest["training"] |= {
        "epochs": 8,
        "result": {"autoencoder": 8, "reference": 20},
        "continued_from": {
            "run": "runs/b",
            "config": second,
            "autoencoder": {"epochs_run": 15},
            "init_from": {"run": "runs/a", "config": first, "autoencoder": {"epochs_run": 30}, "init_from": None},
        },
    }
    card = render(manifest)
    assert "- Continued from runs of 30 epochs (Adam at 0.002 on a cosine, mse loss), then 15 epochs (Adam at" in card
    assert "0.001 on a cosine, loss: each image's PSNR, averaged, 20% moved" in card
    assert "JPEGs at quality 10–60, noise shares 50% / 20% / 10% / 10% / 10%); their configurations" in card
    assert "mse loss)" in card  # the first stage's noise shares are the run's own: not repeated
    assert "trained on the same data for 20 epochs (the autoencoder: 30 + 15 + 8 = 53)" in card
    assert "`reference` is the convolutional autoencoder of Keras' own denoising example" in card


def test_card_names_the_run_an_anomaly_head_was_kept_from() -> None:
    manifest = _manifest()
    manifest["anomaly"]["details"]["scorer_from"] = "runs/fashion-mnist-rescore"
    card = render(manifest)
    assert "The learned head is the one trained in `runs/fashion-mnist-rescore` (it reads the image only" in card
    assert "The learned head is the one trained in" not in render(_manifest())


def test_card_names_the_release_a_run_continued_from_and_its_artefacts_share() -> None:
    manifest = _manifest()
    released = {**manifest["training"], "loss": "mse", "learning_rate": 0.0003}
    manifest["training"] |= {
        "epochs": 10,
        "uploads": asdict(UploadMix(0.08, 0.1, 0.03, 0.03, artefacts=0.22)),
        "continued_from": {
            "run": "models/mnist",
            "bundle": "mnist 2.3.0",
            "config": released,
            "autoencoder": {"epochs_run": 12},
            "init_from": None,
        },
    }
    card = render(manifest)
    assert "- Continued from a run of the release mnist 2.3.0 (12 epochs (Adam at 0.0003 on a cosine, mse loss" in card
    assert "3% JPEGs at quality 10–60, 22% scan artefacts (one or two of blurs, rescans, lines, dust" in card


def test_card_of_a_bundle_trained_without_the_reference_network_says_so() -> None:
    manifest = _manifest()
    evaluation = manifest["evaluation"]
    for methods in evaluation["denoising"].values():
        methods.pop("reference", None)
    evaluation["bce_gaussian_0.5"].pop("reference", None)
    manifest["training"]["result"].pop("reference", None)
    card = render(manifest)
    assert "The reference network was not trained for this bundle (`--no-reference`)" in card
    assert "above the reference network" not in card
    assert "- Gaussian σ = 0.5: " in card
    assert "- Binary cross-entropy at σ = 0.5: autoencoder " in card
    assert "reference 0." not in card
