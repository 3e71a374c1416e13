"""How a memory model's use of its memory evolves in training (issue 16); writes JSON.

    python bench/memory_use.py --flagfile=mnist_learned.flags --data_dir=../shared/data \
        --steps=3000 --probe_every=100 --output=bench/results/memory_use_mnist.json

Trains the flags' run (in a temporary logdir unless --logdir is given) and every `--probe_every`
steps measures, on fixed probe batches of training episodes:
- addressing: KL(q(a|x)||p(a)), H[q(a|x)], H[p(a)], the entropy of the aggregate posterior
  q̄(a) = mean_x q(a|x), the mutual information I(x; a) = H[q̄] - mean H[q(a|x)] (all nats),
  the entries that are some probe target's most probable one, and the spread of the
  similarity logits over the entries;
- the gradient norm of the training loss reaching each group of variables (the learned memory,
  the embedding nets, the prior query, everything else), the embedding nets' split into the
  VIMCO score term and the rest, and the RMS change of M per step since the last probe;
- VIMCO: the spread over the K samples of the log-weights and of the learning signals
  s_k = L - L_{-k}, and E|s_k|;
- the entries: their embeddings' mean pairwise cosine, and their RMS distance from the mean entry;
- the queries: the mean norm of h_q(x) (q(a|x)'s inverse temperature), the mean pairwise cosine of
  the probe targets' queries, and the spread of q(a|x)'s logits across targets per entry;
- dead units: every bias entry whose gradient is exactly zero on all probe batches (a ReLU unit
  that no probe input switches on gets none, and under a ReLU it never comes back), per layer.
Experiment flags change the run for the comparisons of README ("Learned memories: what collapsed
and why"): --memory_init_cells / --memory_init_scale (how the entries start), --memory_step_scale
(how far each step moves them), --zero_init (layers that start at zero).
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from vma_tf import addressing, objectives, tasks, training  # noqa: E402
from vma_tf.cli import flagfiles  # noqa: E402
from vma_tf.cli import train as train_entry  # noqa: E402  (defines the training flags)
from vma_tf.models import AddressedMemory, context_for  # noqa: E402
from vma_tf.seeds import seed_for  # noqa: E402

flags.DEFINE_integer("probe_every", 100, "Steps between probes.")
flags.DEFINE_integer("probe_batches", 8, "Training episodes the probes use (fixed for the whole run).")
flags.DEFINE_string("output", None, "Where the JSON goes.")
flags.DEFINE_integer(
    "memory_init_cells", 0,
    "Experiment: image entries start as uniform noise in [0, 1] on an N x N grid, resized to the image "
    "(the image size: per-pixel noise, the init before issue 16's fix; 0: the model's own init).")
flags.DEFINE_float("memory_init_scale", 1.0, "Experiment: a learned memory's initial values, multiplied by this.")
flags.DEFINE_list("zero_init", [], "Experiment: variables whose path contains one of these start at zero.")
flags.DEFINE_float("memory_step_scale", 1.0, "Experiment: each step's change of a learned memory, multiplied by this.")
FLAGS = flags.FLAGS

_PROBE_STREAM = 7  # seeds of the probe batches and their samples: apart from the training streams
_GROUPS = ("memory", "embedding", "prior_query", "rest")
# The console table: (title, row key, format).
_COLUMNS = (
    ("step", "step", "d"), ("loss", "train_loss_nats", ".2f"), ("KL_a", "kl_a", ".3f"), ("KL_z", "train_kl_z", ".3f"),
    ("H[q]", "entropy_q", ".2f"), ("H[p]", "entropy_p", ".2f"), ("H[q̄]", "entropy_aggregate", ".2f"),
    ("I(x;a)", "mutual_information", ".3f"), ("argmax_used", "argmax_used", "d"), ("|∇M|", "grad_memory", ".3g"),
    ("|∇emb|", "grad_embedding", ".3g"), ("|∇emb score|", "score_grad_embedding", ".3g"),
    ("|∇rest|", "grad_rest", ".3g"), ("ΔM_rms/step", "memory_change_rms_per_step", ".3g"),
    ("signal_sd", "signal_spread", ".3f"), ("cos", "embedding_cosine", ".2f"), ("entry_sd", "entry_spread", ".3f"),
    ("|e_q|", "query_norm", ".2f"), ("cos_q", "query_cosine", ".2f"),
    ("logit_sd_x", "logit_spread_across_targets", ".3f"),
    ("logit_sd", "logit_spread", ".3f"), ("dead", "dead_units_total", "d"),
)


def group_of(variable, model) -> str:
    if model.learned_memory is not None and variable is model.learned_memory:
        return "memory"
    if "embedder" in variable.path:
        return "embedding"
    if "prior_query" in variable.path:
        return "prior_query"
    return "rest"


def entropy(probs: tf.Tensor) -> tf.Tensor:
    return -tf.reduce_sum(tf.math.xlogy(probs, probs), axis=-1)


def probe(trainer: training.Trainer, batch, seed) -> dict[str, tf.Tensor]:
    model, train = trainer.model, trainer.config.train
    variables = model.trainable_variables
    groups = [group_of(v, model) for v in variables]
    context = context_for(model, batch.memory)
    with tf.GradientTape(persistent=True) as tape:
        record = model.log_weights_in_context(batch.targets, context, train.num_samples, seed, batch.visible)
        bound, signal = objectives.vimco_learning_signal(record.log_weights, train.vimco_baseline)
        score = -tf.reduce_mean(tf.reduce_sum(tf.stop_gradient(signal) * record.score_log_prob, axis=0))
        objective = -tf.reduce_mean(bound) + score
        loss = objective
        if train.weight_decay:
            loss += objectives.l2_penalty(training.weight_decay_variables(model), train.weight_decay)
    gradients = tape.gradient(loss, variables)
    objective_gradients = tape.gradient(objective, variables)  # weight decay would hide dead units
    score_gradients = tape.gradient(score, variables)
    del tape

    def norm(grads, group):
        chosen = [g for g, name in zip(grads, groups) if name == group and g is not None]
        return tf.linalg.global_norm(chosen) if chosen else tf.constant(0.0)

    encoded = model.encode_context(context)
    posterior = model.address_posterior(batch.targets, encoded)
    q = posterior.probs_parameter()  # [B, M]
    p = tf.broadcast_to(model.address_prior(encoded).probs_parameter(), tf.shape(q))
    log_q, log_p = tf.math.log(q + 1e-30), tf.math.log(p + 1e-30)
    aggregate = tf.reduce_mean(q, axis=0)
    embeddings = tf.math.l2_normalize(encoded.embeddings, axis=-1)
    cosine = tf.matmul(embeddings, embeddings, transpose_b=True)
    entries = tf.cast(tf.reshape(encoded.entries, [tf.shape(encoded.entries)[0], -1]), tf.float32)
    logits = log_q - tf.reduce_mean(log_q, axis=-1, keepdims=True)
    # ||e_q|| scales every logit of q(a|x) (S = ||e_q|| cos): the posterior's inverse temperature.
    queries = model.target_features(batch.targets)[1]
    query_directions = tf.math.l2_normalize(queries, axis=-1)
    values = {
        "kl_a": tf.reduce_mean(tf.reduce_sum(q * (log_q - log_p), axis=-1)),
        "entropy_q": tf.reduce_mean(entropy(q)),
        "entropy_p": tf.reduce_mean(entropy(p)),
        "entropy_aggregate": entropy(aggregate),
        "mutual_information": addressing.mutual_information(posterior),
        "logit_spread": tf.reduce_mean(tf.math.reduce_std(logits, axis=-1)),
        "embedding_cosine": tf.reduce_mean(cosine),
        "query_norm": tf.reduce_mean(tf.norm(queries, axis=-1)),
        "query_cosine": tf.reduce_mean(tf.matmul(query_directions, query_directions, transpose_b=True)),
        "logit_spread_across_targets": tf.reduce_mean(tf.math.reduce_std(logits, axis=0)),
        "entry_spread": tf.sqrt(tf.reduce_mean(tf.square(entries - tf.reduce_mean(entries, axis=0)))),
        "log_weight_spread": tf.reduce_mean(tf.math.reduce_std(record.log_weights, axis=0)),
        "signal_spread": tf.reduce_mean(tf.math.reduce_std(signal, axis=0)),
        "signal_abs": tf.reduce_mean(tf.abs(signal)),
        "bound_nats": -tf.reduce_mean(bound),
        "score_grad_embedding": norm(score_gradients, "embedding"),
    }
    values.update({f"grad_{group}": norm(gradients, group) for group in _GROUPS})
    bias_without_gradient = {
        variable.path: tf.equal(gradient, 0.0)
        for variable, gradient in zip(variables, objective_gradients)
        if variable.path.endswith("/bias") and gradient is not None
    }
    return values, tf.argmax(q, axis=-1, output_type=tf.int32), bias_without_gradient


def main(argv):
    del argv
    config = train_entry.run_config()
    logdir = config.train.logdir if FLAGS["logdir"].present else tempfile.mkdtemp(prefix="memory_use-")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, logdir=logdir, export=False))
    training.validate(config)
    task = tasks.build_task(config)
    dataset_from = task.training_data()
    trainer = training.build_trainer(config, task)
    if not isinstance(trainer.model, AddressedMemory):
        raise app.UsageError("the probes need a model with an address (VMA)")
    for variable in trainer.model.trainable_variables:
        if any(name in variable.path for name in FLAGS.zero_init):
            variable.assign(tf.zeros_like(variable))
    trainer.start_memory_from_data()  # as train.py's fresh runs (--memory_init=data)
    probe_batches = list(dataset_from(10**7).take(FLAGS.probe_batches))
    probe_fn = tf.function(probe)
    memory = trainer.model.learned_memory
    if memory is not None:
        if FLAGS.memory_init_cells:
            cells = FLAGS.memory_init_cells
            coarse = tf.random.stateless_uniform([memory.shape[0], cells, cells, 1], [config.train.seed, 1])
            memory.assign(tf.image.resize(coarse, memory.shape[1:3]))
        memory.assign(memory * FLAGS.memory_init_scale)
    previous_memory, previous_step = (None if memory is None else memory.numpy()), 0
    rows = []
    start = time.perf_counter()
    print("  ".join(title for title, _, _ in _COLUMNS))
    train_step = trainer.train_step
    if memory is not None and FLAGS.memory_step_scale != 1.0:
        @tf.function
        def train_step(episode):
            before = tf.identity(memory)
            trainer.train_step(episode)
            memory.assign(before + FLAGS.memory_step_scale * (memory - before))

    for step, episode in enumerate(dataset_from(0).take(config.train.steps), start=1):
        train_step(episode)
        if step % FLAGS.probe_every and step != 1:
            continue
        window = trainer.read_metrics()
        measured = [probe_fn(trainer, batch, seed_for(config.train.seed, index, _PROBE_STREAM))
                    for index, batch in enumerate(probe_batches)]
        row = {name: float(np.mean([m[0][name].numpy() for m in measured])) for name in measured[0][0]}
        row["argmax_used"] = int(len(np.unique(np.concatenate([m[1].numpy() for m in measured]))))
        dead = {path: int(np.sum(np.all([m[2][path].numpy() for m in measured], axis=0))) for path in measured[0][2]}
        row["dead_units"] = {path: count for path, count in dead.items() if count}
        row["dead_units_total"] = sum(dead.values())
        row.update(step=step, train_loss_nats=window["loss_nats"], train_kl_a=window.get("kl_a"),
                   train_kl_z=window.get("kl_z"), seconds=time.perf_counter() - start)
        if memory is not None:
            current = memory.numpy()
            row["memory_change_rms_per_step"] = float(
                np.sqrt(np.mean(np.square(current - previous_memory))) / max(step - previous_step, 1)
            )
            previous_memory, previous_step = current, step
        rows.append(row)
        print("  ".join(format(row.get(key, 0.0), spec).rjust(len(title)) for title, key, spec in _COLUMNS), flush=True)
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump({"flags": FLAGS.flags_into_string().splitlines(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main, argv=flagfiles.expand(sys.argv))  # shipped configurations by name
