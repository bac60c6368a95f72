"""Every configuration key this package adds or checks, declared once.

A :class:`Key` states what a key accepts, its default, what it means and whether it changes a
run's results. Everything else is derived from this table, so the pieces cannot drift apart:
``Config`` checks values with :meth:`Key.check`; ``properties/overall.yaml`` (the RecBole-style
file users read) and the key tables of properties/README.md are rendered from it
(``python -m recbole_rsir.schema --yaml`` / ``--markdown``, tests keep both up to date); the
resume check ignores :data:`IGNORED_KEYS`. RecBole's own keys appear here only where this
package sets a default of its own or checks the value because a run depends on it.
"""
import textwrap
from dataclasses import dataclass

import yaml
from recbole.evaluator import metric_types
from recbole.utils import EvaluatorType

from recbole_rsir.errors import ConfigError


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _options(values):
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# ---- what a key accepts: each kind is a test and the words that say it -------------------
class Integer:
    def __init__(self, low=None):
        self.low = low

    def accepts(self, value):
        return _is_int(value) and (self.low is None or value >= self.low)

    def __str__(self):
        return "an integer" if self.low is None else f"an integer >= {self.low}"


class Number:
    """A real number above ``above`` (exclusive) or from ``low`` (inclusive), up to ``high`` (inclusive)."""

    def __init__(self, above=None, low=None, high=None):
        self.above = above
        self.low = low
        self.high = high

    def accepts(self, value):
        return (_is_number(value) and (self.above is None or value > self.above)
                and (self.low is None or value >= self.low) and (self.high is None or value <= self.high))

    def __str__(self):
        if self.high is not None:
            return (f"a number in ({self.above}, {self.high}]" if self.above is not None
                    else f"a number in [{self.low}, {self.high}]")
        return f"a number > {self.above}" if self.above is not None else f"a number >= {self.low}"


class Probability:
    def accepts(self, value):
        return _is_number(value) and 0 <= value <= 1

    def __str__(self):
        return "a probability in [0, 1]"


class Boolean:
    def accepts(self, value):
        return isinstance(value, bool)

    def __str__(self):
        return "true or false"


class Choice:
    """One of a few words; ``any_case`` for keys RecBole itself compares in lower case."""

    def __init__(self, *options, any_case=False):
        self.options = options
        self.any_case = any_case

    def accepts(self, value):
        if not isinstance(value, str):
            return False
        fold = str.lower if self.any_case else str
        return fold(value) in {fold(o) for o in self.options}

    def __str__(self):
        return _options(self.options)


class Text:
    def __init__(self, what="a string"):
        self.what = what

    def accepts(self, value):
        return isinstance(value, str)

    def __str__(self):
        return self.what


class Either:
    def __init__(self, *kinds):
        self.kinds = kinds

    def accepts(self, value):
        return any(kind.accepts(value) for kind in self.kinds)

    def __str__(self):
        return " or ".join(str(kind) for kind in self.kinds)


class IntegerList:
    """A list of integers, or one integer (RecBole makes it a list of one)."""

    def __init__(self, low):
        self.item = Integer(low)

    def accepts(self, value):
        values = [value] if _is_int(value) else value
        return isinstance(values, list) and len(values) > 0 and all(self.item.accepts(v) for v in values)

    def __str__(self):
        return f"a list of integers >= {self.item.low}"


class JudgeModel:
    """``none``, ``previous`` or a sequential model this package can train."""

    WORDS = ("none", "previous")

    def accepts(self, value):
        if not isinstance(value, str):
            return False
        from recbole_rsir.utils import sequential_model_names  # models import the package's config
        return value in self.WORDS or value in sequential_model_names()

    def __str__(self):
        return "'none', 'previous' or a sequential model's name"


RANKING_METRICS = sorted(name for name, kind in metric_types.items() if kind == EvaluatorType.RANKING)
"""RecBole's metrics of a full ranking (its value metrics need labelled evaluation)."""


class Metrics:
    """RecBole's ranking metric names in any case, as a list or one name."""

    def accepts(self, value):
        values = [value] if isinstance(value, str) else value
        return (isinstance(values, list) and len(values) > 0
                and all(isinstance(v, str) and v.lower() in RANKING_METRICS for v in values))

    def __str__(self):
        return f"a list of RecBole ranking metrics ({', '.join(RANKING_METRICS)})"


RECBOLE = "RecBole's"
"""Default of a RecBole key this package checks but leaves at RecBole's own value."""


@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``accepts`` is None where RecBole alone decides what is valid; ``recbole`` marks RecBole's
    own keys, declared here for a default of this package's, a check, or the resume check.
    """
    name: str
    accepts: object
    default: object
    meaning: str
    changes_results: bool = True
    recbole: bool = False

    def check(self, value):
        if self.accepts is not None and not self.accepts.accepts(value):
            raise ConfigError(f"{self.name} must be {self.accepts}, got {value!r}")


def _recbole(name, accepts, default, meaning, changes_results=True):
    return Key(name, accepts, default, meaning, changes_results, recbole=True)


SECTIONS = (
    ("RSIR (Lian et al., ICML 2026)", (
        Key("rsir_rounds", Integer(0), 1, "RSIR rounds after the base model (round 0); raising it extends a "
            "finished run", changes_results=False),
        Key("rsir_m", Integer(1), 5, "synthetic sequences per training user and round"),
        Key("rsir_tau", Integer(1), 50, "fidelity threshold: some unused real item must rank within the top tau"),
        Key("rsir_p", Probability(), 0.5, "probability that a step's candidate pool is the user's own history "
            "(else the whole catalogue)"),
        Key("rsir_min_len", Integer(2), 3, "shortest synthetic sequence kept"),
        Key("rsir_fidelity", Boolean(), True, "false = the no-fidelity ablation"),
        Key("rsir_prefix_len", Either(Integer(1), Choice("random")), 1,
            "real items a synthetic sequence starts from (random: uniform in [1, n-1])"),
        Key("rsir_topk", Integer(1), 1, "1 = greedy; k > 1 samples among the pool's top k by softmax"),
        Key("rsir_refine", Integer(0), 0,
            "refine on miss: when a generated item fails the fidelity test, try in its place up to this many "
            "other items of the pool it was picked from at that step, best score first (the context and the "
            "failed item excluded), each tested in turn; the sequence ends only when none passes (0 = the paper)"),
        Key("rsir_judge_model", JudgeModel(), "none",
            "who scores the fidelity test (the generator's own scores still pick the items): none = the "
            "generator; previous = the model of the round before the generator's (round 1, whose generator "
            "is the base, has none: the generator judges itself); a model name = that model, trained with the "
            "same trainer and config on the same training data as the generator, just before generation"),
        Key("rsir_tau_schedule", Choice("constant", "tighten", "per_user"), "constant",
            "constant = rsir_tau every round; tighten = round k generates with "
            "max(1, floor(rsir_tau * rsir_tau_factor^(k-1))), stricter as the training data fills with "
            "synthetic sequences; per_user = before each generation the model that judges is teacher-forced "
            "along each seed's training sequence, and the seed's tau is clamp(ceil(rsir_tau_quantile-quantile "
            "of the ranks of its real next items), 1, rsir_tau_max) (rsir_tau for a one-item seed), looser for "
            "users whose real items rank poorly"),
        Key("rsir_tau_factor", Number(above=0), 0.5, "tau's factor per round under rsir_tau_schedule: tighten"),
        Key("rsir_tau_quantile", Number(above=0, high=1), 0.5,
            "the quantile of a seed's own ranks its tau is under rsir_tau_schedule: per_user (0.5 = median)"),
        Key("rsir_tau_max", Integer(1), 200, "the largest tau a seed gets under rsir_tau_schedule: per_user"),
        Key("rsir_seed_synthetic", Boolean(), False, "also seed round k+1 from earlier synthetic sequences"),
        Key("rsir_mode", Choice("scratch", "finetune"), "scratch",
            "scratch (each round trains new weights) or finetune (each round starts from the previous "
            "round's best weights)"),
        Key("rsir_output_dir", Text("a path"), "rsir_output",
            "where results, synthetic data and per-round checkpoints go", changes_results=False),
        Key("rsir_gen_batch_size", Integer(1), 1024, "sequences decoded together", changes_results=False),
        Key("rsir_score_chunk", Integer(0), 0, "score the catalogue in chunks of this many items (0 = at once)",
            changes_results=False),
        Key("rsir_candidates", Choice("exact", "ann"), "exact",
            "exact (every item scored at every generation step) or ann (a faiss index over the item vectors "
            "retrieves rsir_ann_candidates items per context and their exact scores decide; needs the ann extra; "
            "can differ from exact where the index misses a top item)"),
        Key("rsir_ann_candidates", Integer(1), 256,
            "items the ann index retrieves per context (L); at least max(rsir_tau, rsir_topk + "
            "MAX_ITEM_LIST_LENGTH) or the catalogue"),
        Key("rsir_ann_index", Choice("ivf", "hnsw", "flat"), "ivf",
            "ann index: ivf (faiss IVF-Flat), hnsw (faiss HNSW-Flat) or flat (exact search, same sequences as "
            "exact scoring)"),
        Key("rsir_ann_nlist", Integer(0), 0, "ivf: lists (0 = about sqrt(items))"),
        Key("rsir_ann_nprobe", Integer(1), 32, "ivf: lists searched per context"),
        Key("rsir_ann_hnsw_m", Integer(2), 32, "hnsw: neighbours per node"),
        Key("rsir_ann_ef_search", Integer(0), 0, "hnsw: search breadth (0 = rsir_ann_candidates)"),
        Key("rsir_overwrite", Boolean(), False,
            "discard saved rounds made with other settings instead of refusing", changes_results=False),
    )),
    ("training", (
        Key("train_path", Choice("all_positions", "recbole", "auto"), "auto",
            "auto (all_positions for models with the backbone interface, else recbole), all_positions (loss "
            "at every position of whole sequences) or recbole (RecBole's one row per prefix)"),
        Key("train_loss", Choice("full_ce", "sampled_softmax"), "sampled_softmax",
            "sampled_softmax (the RSIR reference code's) or full_ce, on the all_positions path "
            "(HSTU: on both paths)"),
        Key("train_neg_samples", Integer(1), 256, "shared uniform negatives per batch for sampled_softmax"),
        _recbole("train_batch_size", Integer(1), 256,
                 "sequences per batch on the all_positions path; prefixes on the recbole path"),
        Key("train_length_groups", Integer(1), 1,
            "1 = all_positions batches of rows drawn at random; more = rows sorted by length within groups of "
            "this many batches (less padding; with sampled_softmax it learned worse on Beauty)"),
        Key("torch_threads", Integer(0), 0,
            "torch's CPU threads; 0 = torch's choice (OMP_NUM_THREADS, else one per core); the saved config "
            "records the number used. Keep the threads of all running jobs within the cores: here a 2-thread "
            "run beside a 1-thread one on 2 cores took 80-148 s an epoch instead of 3.3 s",
            changes_results=False),
        _recbole("epochs", Integer(1), 200, "most epochs a round trains (early stopping may end it sooner)"),
        _recbole("stopping_step", Integer(1), 10, "validations without improvement that stop a round's training"),
        _recbole("train_neg_sample_args", None, None,
                 "none: the next-item losses draw their own negatives (RecBole needs none with loss_type CE)"),
        _recbole("loss_type", None, "CE", "loss of RecBole's own models on the recbole path"),
        _recbole("learner", Choice("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam", any_case=True),
                 RECBOLE, "optimizer (Adam and AdamW run torch's fused kernel)"),
        _recbole("learning_rate", Number(above=0), RECBOLE, "the optimizer's learning rate"),
        _recbole("weight_decay", Number(low=0), RECBOLE, "the optimizer's L2 penalty"),
        _recbole("eval_step", Integer(0), RECBOLE,
                 "epochs between validations, which pick the best epoch (0 = none: the last epoch is kept)"),
        _recbole("seed", Integer(), RECBOLE, "random seed; round k reseeds from seed + k"),
        _recbole("reproducibility", Boolean(), RECBOLE, "deterministic torch kernels"),
    )),
    ("data: time order decides the split, so the timestamp is loaded", (
        _recbole("load_col", None, {"inter": ["user_id", "item_id", "timestamp"]},
                 "columns read from the dataset"),
        _recbole("MAX_ITEM_LIST_LENGTH", Integer(2), RECBOLE,
                 "longest sequence a model reads, and longest synthetic sequence"),
        _recbole("data_path", Text("a path"), RECBOLE,
                 "folder holding a folder of atomic files per dataset; a bundled dataset is unpacked there",
                 changes_results=False),
    )),
    ("evaluation: leave-one-out by time, full ranking (as in the paper and RecBole)", (
        _recbole("eval_args", None, {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO",
                                     "mode": "full"},
                 "a user's last item is the test target, the one before it the validation target"),
        _recbole("metrics", Metrics(), ["Recall", "NDCG", "MRR"], "metrics reported"),
        _recbole("topk", IntegerList(1), [10, 20], "cutoffs of the metrics"),
        _recbole("valid_metric", Text("a metric@k"), "NDCG@10",
                 "the one of metrics@topk that early stopping follows"),
        _recbole("eval_batch_size", Integer(1), RECBOLE, "users ranked together", changes_results=False),
        Key("exclude_history_items", Boolean(), False,
            "mask each user's earlier items when ranking (the RSIR reference code's protocol)"),
    )),
    ("how and where a run works; none changes its results", (
        _recbole("show_progress", Boolean(), True, "progress bars", changes_results=False),
        _recbole("state", Choice("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL", any_case=True), RECBOLE,
                 "logging level", changes_results=False),
        _recbole("checkpoint_dir", Text("a path"), RECBOLE,
                 "RecBole's checkpoint folder; RSIR rounds keep theirs in rsir_output_dir", changes_results=False),
        _recbole("use_gpu", Boolean(), RECBOLE, "use a GPU when there is one", changes_results=False),
        _recbole("gpu_id", None, RECBOLE, "GPUs to use", changes_results=False),
        _recbole("device", None, RECBOLE, "set by RecBole from gpu_id and use_gpu", changes_results=False),
        _recbole("worker", Integer(0), RECBOLE, "data-loading worker processes", changes_results=False),
        _recbole("local_rank", None, RECBOLE, "set by RecBole for distributed runs", changes_results=False),
        _recbole("log_wandb", Boolean(), RECBOLE, "log to Weights & Biases", changes_results=False),
        _recbole("wandb_project", Text(), RECBOLE, "Weights & Biases project", changes_results=False),
        _recbole("config_files", None, RECBOLE, "config files, as RecBole's run_recbole passes them",
                 changes_results=False),
    )),
)

KEYS = {key.name: key for _, keys in SECTIONS for key in keys}
RSIR_KEYS = sorted(name for name in KEYS if name.startswith("rsir_"))
IGNORED_KEYS = frozenset(name for name, key in KEYS.items() if not key.changes_results)
"""Keys a resumed run may change: how far, where and how verbosely it runs."""


# ---- rendering ---------------------------------------------------------------------------
def _yaml_value(value):
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
    return text.replace("\n...\n", "").strip()


def _defaults(keys):
    return [key for key in keys if key.default is not RECBOLE]


COMMENT_COLUMN = 30
LINE_WIDTH = 100


def render_yaml():
    """``properties/overall.yaml``: this package's defaults, each with what it accepts and means."""
    lines = ["# recbole-rsir defaults, layered over RecBole's own (see recbole_rsir/config.py).",
             "# Rendered from recbole_rsir/schema by `python -m recbole_rsir.schema --yaml`: edit the",
             "# schema, then render this file again."]
    for title, keys in SECTIONS:
        if not _defaults(keys):
            continue
        lines += ["", f"# --- {title} ---"]
        for key in _defaults(keys):
            setting = f"{key.name}: {_yaml_value(key.default)}"
            comment = f"({key.accepts}) {key.meaning}" if key.accepts is not None else key.meaning
            if not key.changes_results:
                comment += "; does not change results"
            if len(setting) < COMMENT_COLUMN:
                wrapped = textwrap.wrap(comment, LINE_WIDTH - COMMENT_COLUMN - 2)
                lines.append(f"{setting:<{COMMENT_COLUMN}}# {wrapped[0]}")
                lines += [f"{'':<{COMMENT_COLUMN}}#   {rest}" for rest in wrapped[1:]]
            else:                        # a long value: its comment goes above it
                lines += [f"# {line}" for line in textwrap.wrap(comment, LINE_WIDTH - 2)] + [setting]
    return "\n".join(lines) + "\n"


def _cell(text):
    return text.replace("|", "\\|")


def render_markdown(recbole=False):
    """A key table of properties/README.md: this package's keys, or the RecBole keys it sets a
    default for or checks (``recbole=True``)."""
    header = ["| key | accepts | default | changes results | meaning |", "|---|---|---|---|---|"]

    def rows(keys):
        for key in keys:
            default = key.default if key.default is RECBOLE else f"`{_yaml_value(key.default)}`"
            accepts = str(key.accepts) if key.accepts is not None else "checked by RecBole"
            yield (f"| `{key.name}` | {_cell(accepts)} | {_cell(default)} | "
                   f"{'yes' if key.changes_results else 'no'} | {_cell(key.meaning)} |")

    return "\n".join([*header, *rows(key for key in KEYS.values() if key.recbole == recbole)]) + "\n"
