"""The convolutional denoising autoencoder and the reference network.

The autoencoder is built as two named models, ``encoder`` (image -> latent) and
``decoder`` (latent -> image), composed into ``autoencoder``. Nothing crosses the
bottleneck except the latent, so decoding a latent from ``/encode`` is faithful.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from denoise_bundle import IMAGE_SHAPE, TENSOR_NAMES
from training.config import MAX_LATENT_SIZE, Architecture

__all__ = ["MAX_LATENT_SIZE", "Architecture", "Autoencoder", "build_autoencoder", "build_reference"]


def _conv(x: keras.KerasTensor, filters: int, strides: int = 1) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _up(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def build_encoder(arch: Architecture) -> keras.Model:
    w28, w14, w7 = arch.widths
    image = keras.Input(shape=IMAGE_SHAPE, name=TENSOR_NAMES["encoder"][0])
    x = _conv(image, w28)
    x = _conv(x, w14, strides=2)
    x = _conv(x, w14)
    x = _conv(x, w7, strides=2)
    for _ in range(arch.depth_7 - 1):
        x = _conv(x, w7)
    latent = layers.Conv2D(arch.latent_channels, 1, name=TENSOR_NAMES["encoder"][1])(x)
    return keras.Model(image, latent, name="encoder")


def build_decoder(arch: Architecture) -> keras.Model:
    w28, w14, w7 = arch.widths
    latent = keras.Input(shape=arch.latent_shape, name=TENSOR_NAMES["decoder"][0])
    x = latent
    for _ in range(arch.depth_7):
        x = _conv(x, w7)
    x = _up(x, w14)
    x = _conv(x, w14)
    x = _up(x, w28)
    for _ in range(arch.refine_28):
        x = _conv(x, w28)
    denoised = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name=TENSOR_NAMES["decoder"][1])(x)
    return keras.Model(latent, denoised, name="decoder")


@dataclass(frozen=True)
class Autoencoder:
    autoencoder: keras.Model
    encoder: keras.Model
    decoder: keras.Model


def build_autoencoder(arch: Architecture) -> Autoencoder:
    if arch.latent_size > MAX_LATENT_SIZE:
        raise ValueError(f"latent of {arch.latent_size} floats exceeds the {MAX_LATENT_SIZE}-float bottleneck")
    encoder = build_encoder(arch)
    decoder = build_decoder(arch)
    image = keras.Input(shape=IMAGE_SHAPE, name=TENSOR_NAMES["autoencoder"][0])
    denoised = decoder(encoder(image))
    autoencoder = keras.Model(image, denoised, name="autoencoder")
    return Autoencoder(autoencoder=autoencoder, encoder=encoder, decoder=decoder)


def build_reference() -> keras.Model:
    """The seeds' network (keras-io's autoencoder example); its 7x7x32 code is no bottleneck."""
    image = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(image)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(image, x, name="reference")
