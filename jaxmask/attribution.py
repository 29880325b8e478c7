r"""Unit scores for the baselines: single-unit effects, Integrated Gradients, attribution patching, gradient x
activation and a diagnostic probe, each a float32[N] over the flat unit ids (larger = more important).

Every causal score is taken under the search's own gated replacement :math:`\tilde s = (1 - z) s + z r`
(``interventions.margins``), of the mean over items of a per-item loss of the margin (the flip loss by default).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxmask import interventions, models, objectives
from jaxmask.models import lstm


def mean_losses(params: lstm.Params, items: interventions.Items, gates_SxN, replacement: str, mean_h: dict | None,
                sites: str, chunk: int | None = None, by_length: bool = False,
                loss_fn: Callable[[jax.Array], jax.Array] = objectives.flip_loss) -> jax.Array:
  """Mean over the items of ``loss_fn`` of the margin under each of S gate vectors (``chunk`` at a time): float32[S]."""
  return loss_fn(interventions.margins(params, items, gates_SxN, replacement, mean_h, sites, chunk, by_length)).mean(axis=1)


def single_unit_effects(params: lstm.Params, items: interventions.Items, replacement: str = "counterfactual",
                        sites: str = "h", mean_h: dict | None = None) -> jax.Array:
  r"""Each unit's effect alone: the flip loss it removes when it is the only one intervened, float32[N].

  .. math::
     e_i = \overline{\ell}(0) - \overline{\ell}(e_i), \qquad \overline{\ell}(z) = \mathrm{mean}_{items}\,
     \mathrm{softplus}(m(z))

  with :math:`e_i` the i-th one-hot gate vector. The clean run and the N single-unit interventions are the
  N + 1 rows of one ``interventions.margins`` call (vmapped, in chunks, the items grouped by length so that no
  padded step is run). Larger = more important.
  """
  n = models.num_units(params, sites)
  losses = mean_losses(params, items, jnp.eye(n + 1, n, k=-1), replacement, mean_h, sites, by_length=True)
  return losses[0] - losses[1:]


@functools.partial(jax.jit, static_argnames=("replacement", "sites", "loss_fn"))
def chunk_gradients(params: lstm.Params, items: interventions.Items, gates_CxN: jax.Array, replacement: str,
                     mean_h: dict | None, sites: str, loss_fn: Callable) -> jax.Array:
  """d(summed loss)/d(gates) of C gate vectors at once (jitted): float32[C, N]."""
  loss = lambda z: mean_losses(params, items, z, replacement, mean_h, sites, z.shape[0], loss_fn=loss_fn).sum()
  return jax.grad(loss)(gates_CxN)


def _gate_gradients(params: lstm.Params, items: interventions.Items, gates_SxN: jax.Array, replacement: str,
                    mean_h: dict | None, sites: str, loss_fn: Callable = objectives.flip_loss) -> jax.Array:
  """The gradient of the mean loss with respect to the gates at each of S points: float32[S, N].

  The S losses are independent, so the gradient of their sum is, row by row, each point's gradient. The
  points run in vmapped chunks sized from the shapes (``interventions.rows_per_chunk`` for a backward pass),
  the last one padded so that one compile serves all.
  """
  start, end = interventions.span(items, replacement)
  start = 0 if items.target_rest is not None else start  # several-token words run from step 0
  chunk = min(len(gates_SxN), interventions.rows_per_chunk(params, *interventions.run_size(items, start, end),
                                                            backward=True))
  padded = jnp.concatenate([gates_SxN, jnp.zeros((-len(gates_SxN) % chunk, gates_SxN.shape[1]))])
  grads = [chunk_gradients(params, items, padded[i:i + chunk], replacement, mean_h, sites, loss_fn)
           for i in range(0, len(padded), chunk)]
  return jnp.concatenate(grads)[:len(gates_SxN)]


def integrated_gradients(params: lstm.Params, items: interventions.Items, steps: int = 32,
                         replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None
                         ) -> jax.Array:
  r"""Integrated Gradients of the mean flip loss along the straight gate path z = 0 -> 1, as a loss reduction.

  .. math::
     a_i = -\int_0^1 \frac{\partial \overline{\ell}}{\partial z_i}(\alpha \mathbf 1)\, d\alpha
         \approx -\sum_{s=0}^{S} w_s \frac{\partial \overline{\ell}}{\partial z_i}(\tfrac{s}{S} \mathbf 1)

  with trapezoid weights :math:`w = (\tfrac12, 1, \dots, 1, \tfrac12)/S`, S = ``steps``. The S + 1 gradients
  come from one backward pass through one ``interventions.margins`` call, vmapped over the path. Completeness: since
  :math:`\frac{d}{d\alpha}\overline{\ell}(\alpha\mathbf 1) = \sum_i \partial_i \overline{\ell}`,
  :math:`\sum_i a_i = \overline{\ell}(0) - \overline{\ell}(\mathbf 1)` up to the quadrature error: the whole
  intervention's loss reduction, shared among the units. Its left-Riemann one-point version is
  :func:`attribution_patching`. Larger = more important.
  """
  if steps < 1:
    raise ValueError(f"steps must be positive, got {steps}.")
  n = models.num_units(params, sites)
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  grads_SxN = _gate_gradients(params, items, alphas[:, None] * jnp.ones((1, n)), replacement, mean_h, sites)
  weights_S = jnp.full((steps + 1,), 1.0 / steps).at[jnp.array([0, steps])].set(0.5 / steps)
  return -weights_S @ grads_SxN


def attribution_patching(params: lstm.Params, items: interventions.Items, replacement: str = "counterfactual",
                         sites: str = "h", mean_h: dict | None = None,
                         loss_fn: Callable[[jax.Array], jax.Array] = objectives.flip_loss) -> jax.Array:
  r"""Attribution patching: the first-order estimate of each unit's interchange effect, float32[N].

  (Nanda 2023; Syed, Rager & Conmy 2023, "Attribution Patching Outperforms Automated Circuit Discovery";
  Kramar et al. 2024, "AtP*".) Patching unit i replaces its state :math:`s_{i,t}` by :math:`r_{i,t}` at
  every intervened step t; its effect on the mean loss :math:`\overline{\ell}` (``loss_fn`` of the margin,
  averaged over items) is estimated to first order by

  .. math::
     a_i = -\sum_t (r_{i,t} - s_{i,t})\, \frac{\partial \overline{\ell}}{\partial s_{i,t}}
         = -\frac{\partial \overline{\ell}}{\partial z_i}\Big|_{z = 0},

  where :math:`\partial \overline{\ell}/\partial s_{i,t}` is the gradient with respect to the state injected
  at step t (through every later step and layer). The two forms agree because the gated replacement is
  :math:`\tilde s_{i,t} = s_{i,t} + z_i (r_{i,t} - s_{i,t})`: the chain rule at z = 0 (the clean run) gives
  the sum. So all N scores come from one forward and one backward pass, as a gradient in the gates. The sign
  makes :math:`a_i` the predicted loss *reduction*: larger = more important. It is exact when the loss is
  affine in :math:`z_i` (e.g. the margin itself, ``loss_fn=lambda m: m``, of a one-layer LSTM with no
  recurrent h weights), and otherwise the Taylor estimate of :func:`single_unit_effects`.
  """
  n = models.num_units(params, sites)
  return -_gate_gradients(params, items, jnp.zeros((1, n)), replacement, mean_h, sites, loss_fn)[0]


def gradient_x_activation(params: lstm.Params, items: interventions.Items, sites: str = "h") -> jax.Array:
  r"""Classical saliency, activation x gradient, summed over time: float32[N].

  .. math::
     g_i = \sum_t s_{i,t}\, \frac{\partial \overline{\ell}}{\partial s_{i,t}}
         = -\sum_t (0 - s_{i,t})\, \frac{\partial \overline{\ell}}{\partial s_{i,t}},

  i.e. :func:`attribution_patching` with zero replacement: the first-order flip-loss reduction of zero-ablating
  the unit, whatever replacement the search uses. Signed, not absolute: the flip loss is directional, and a
  unit whose ablation would strengthen the clean prediction (:math:`g_i < 0`) is the opposite of what a set
  that flips must contain; :math:`|g_i|` would rank it as high as a unit that helps. Larger = more important.
  """
  return attribution_patching(params, items, "zero", sites)


@flax.struct.dataclass
class Probe:
  """A logistic-regression probe on standardised activations: weights, bias and training accuracy."""
  weights_N: jax.Array
  bias: jax.Array
  accuracy: jax.Array


def _activations(params: lstm.Params, tokens_BxT: jax.Array, length_B: jax.Array, sites: str) -> jax.Array:
  """Every unit's state at position length - 1, flat in the order of the gate vector: float32[B, N]."""
  model = models.of_params(params)
  _, states = model.apply(params, tokens_BxT, return_states=True)
  return model.unit_values(states, sites)[jnp.arange(tokens_BxT.shape[0]), length_B - 1]


@functools.partial(jax.jit, static_argnames=("sites", "steps"))
def fit_probe(params: lstm.Params, items: interventions.Items, labels_B: jax.Array, sites: str = "h",
              steps: int = 500, learning_rate: float = 0.05, l2: float = 1e-2) -> Probe:
  r"""Logistic regression of a binary label from the units' activations at the prediction position.

  Rows: the prefixes with ``labels_B`` (e.g. 1 = singular subject, or the antecedent's gender) and the
  counterfactuals with ``1 - labels_B``, so the two classes balance and each pair differs only in the
  feature. Each unit is standardised over these rows (constant units get weight 0). Full-batch Adam,
  ``steps`` steps, on

  .. math::
     \mathrm{mean}_{rows}\, \mathrm{BCE}(\sigma(x^\top w + b), y) + \tfrac{l_2}{2} \lVert w \rVert^2 .

  The L2 term makes the optimum unique when the classes separate, so the ranking does not depend on when
  the optimiser stops.
  """
  x = jnp.concatenate([_activations(params, items.prefix, items.length, sites),
                       _activations(params, items.counterfactual, items.length, sites)])
  y = jnp.concatenate([labels_B, 1 - labels_B]).astype(jnp.float32)
  x = (x - x.mean(0)) / jnp.maximum(x.std(0), 1e-6)

  def loss(p):
    w, b = p
    return optax.sigmoid_binary_cross_entropy(x @ w + b, y).mean() + 0.5 * l2 * jnp.sum(w ** 2)

  opt = optax.adam(learning_rate)

  def step(carry, _):
    p, state = carry
    updates, state = opt.update(jax.grad(loss)(p), state, p)
    return (optax.apply_updates(p, updates), state), None

  p0 = (jnp.zeros(x.shape[1]), jnp.zeros(()))
  ((w, b), _), _ = jax.lax.scan(step, (p0, opt.init(p0)), length=steps)
  return Probe(weights_N=w, bias=b, accuracy=jnp.mean((x @ w + b > 0) == (y > 0.5)))


def probe(params: lstm.Params, items: interventions.Items, labels_B: jax.Array, sites: str = "h") -> jax.Array:
  """The diagnostic probe's ranking: |weight| of each unit in ``fit_probe``, float32[N]. Larger = more important.

  Correlational, not causal: a unit that encodes the label but that the model never reads scores as high.
  """
  return jnp.abs(fit_probe(params, items, jnp.asarray(labels_B), sites).weights_N)
