"""The baselines of the VMA paper (section 4.2), with VMA's conv encoder and decoder.

`ConvVAE`: p(z) = N(0, I), q(z|x), p(x|z): the conv pyramid and the upscaler without memory
inputs. It reads no context: the "no memory" point of every curve.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vma_tf import nets
from vma_tf.config import ModelConfig
from vma_tf.models.base import GenerativeModel, LogWeights, continuous_latent_log_weights

tfd = tfp.distributions


class ConvVAE(GenerativeModel):
    """A VAE whose decoder may read a context through `likelihood` (see SoftAttentionVAE)."""

    DIAGNOSTICS = ("kl_z",)

    def __init__(self, config: ModelConfig, image_size: int, memory_inputs: bool = False, name: str = "vae",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.model_config, self.image_size = config, image_size
        channels = config.conv_channels
        self.pyramid = nets.ConvPyramid(channels, name="pyramid")
        self.flatten = keras.layers.Flatten()
        self.posterior_z = nets.GaussianHead(config.hidden_units, config.latent_dim, name="posterior_z")
        self.decoder = nets.Upscaler(channels, image_size, memory_inputs=memory_inputs, name="decoder")

    @property
    def reads_context(self) -> bool:
        return False

    def encode_context(self, context: tf.Tensor | None) -> None:
        if context is not None:
            raise ValueError(f"{self.name} reads no context: pass None")
        return None

    def z_posterior(self, x: tf.Tensor) -> tfd.MultivariateNormalDiag:
        """q(z|x) for x [B, S, S, 1]: batch [B], event [Z]."""
        return nets.diag_gaussian(self.posterior_z(self.flatten(self.pyramid(x)[-1])))

    def z_prior(self) -> tfd.MultivariateNormalDiag:
        """p(z) = N(0, I): batch [], event [Z]."""
        return tfd.MultivariateNormalDiag(loc=tf.zeros([self.model_config.latent_dim]))

    def likelihood(
        self, z: tf.Tensor, encoded: Any, visible: tf.Tensor | None = None
    ) -> tuple[tfd.Independent, tf.Tensor | None]:
        """(p(x | z) for z [..., Z]: batch [...], event [S, S, 1]; the reads, None here)."""
        logits = self.decoder(nets.flatten_leading(z, 1))
        return nets.bernoulli_image(nets.unflatten_samples(logits, tf.shape(z)[:-1])), None

    def log_weights(self, x, encoded, num_samples, seed, visible=None) -> LogWeights:
        return continuous_latent_log_weights(x, self.z_posterior(x), self.z_prior(),
                                             lambda z: self.likelihood(z, encoded, visible), num_samples, seed)

    def sample(self, encoded: Any, num_samples: int | tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Draws from p(x | C): {"images": float32 [N, S, S, 1]}."""
        z = self.z_prior().sample(num_samples, seed=seed)
        return {"images": self.likelihood(z, encoded)[0].mean()}
