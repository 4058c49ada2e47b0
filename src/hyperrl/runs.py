"""Where a ``hyperrl`` run writes, and whether a checkpoint can start it: the run folder (versioned, locked against a
second process), and the checks a checkpoint passes before Lightning loads it (readable, not damaged, fits the model,
asks for no setting the resumed run would ignore). Every problem is a :class:`~hyperrl.errors.ConfigurationError`
whose message names the folder or file; nothing here imports torch or Lightning at module level.
"""

from __future__ import annotations

import os
import re

from hyperrl.errors import ConfigurationError

#: Where runs go unless ``--trainer.default_root_dir`` says otherwise: ``runs/<config file stem>/version_<n>``.
RUNS_DIR = "runs"

#: ``--ckpt_path`` values Lightning resolves itself rather than reading a file of that name (also ``registry:...``).
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def is_checkpoint_file(path: str) -> bool:
    """Whether ``--ckpt_path path`` names a local file, not one of Lightning's names or a URL."""
    return not (path in LIGHTNING_CKPT_NAMES or path.lower().startswith("registry:") or "://" in path)


def refuse_changed_model_settings(path: str, options: list[str], asked, resumed, config_files: list[str]) -> None:
    """A resumed run keeps the model settings stored in its checkpoint (Lightning rebuilds the model from them). A
    setting of this command (a ``--model`` option or the config file) that asks for something else would be silently
    ignored: refuse it. Every init argument is compared, whatever the algorithm."""
    differing = _differing_model_settings(asked, resumed)
    if not differing:
        return
    class_changed = differing[0][0] == "class_path"  # another algorithm: say that first, whatever else differs
    for name, mine, theirs in differing[:1] if class_changed else differing:
        if name in options or name.split(".", 1)[0] in options:  # the setting, or its whole group
            raise ConfigurationError(
                f"option --model.{name}={mine!r} is not allowed with --ckpt_path {path}: that checkpoint "
                f"resumes with {name}={theirs!r} (a resumed run keeps its model settings); drop the option "
                "or start a new run"
            )
    source = f"the config file {config_files[-1]}" if config_files else "the default model settings"
    named = differing[:1] if class_changed else differing[:3]  # another algorithm says it all; else the first few
    more = f" (and {len(differing) - len(named)} more)" if len(differing) > len(named) and not class_changed else ""
    mine = ", ".join(f"{name}={value!r}" for name, value, _ in named) + more
    theirs = ", ".join(f"{name}={value!r}" for name, _, value in named)
    raise ConfigurationError(
        f"model settings {mine} from {source} are not allowed with --ckpt_path {path}: that checkpoint resumes with "
        f"{theirs} (a resumed run keeps its model settings); use the config the run was started with, or start a "
        "new run"
    )


def _differing_model_settings(asked, resumed) -> list[tuple[str, object, object]]:
    """``(name, asked, resumed)`` for the class path and every init argument both model configs have that differs."""
    differing = []
    if asked.get("class_path") != resumed.get("class_path"):
        differing.append(("class_path", asked.get("class_path"), resumed.get("class_path")))
    mine = _plain(asked.get("init_args")) or {}
    theirs = _plain(resumed.get("init_args")) or {}
    for name in sorted(set(mine) & set(theirs)):
        if mine[name] == theirs[name]:
            continue
        group = all(isinstance(v, dict) and "class_path" not in v for v in (mine[name], theirs[name]))
        if group:  # a settings group: each of its settings that differs (``replay.batch_size``)
            differing += [(f"{name}.{key}", mine[name][key], theirs[name][key])
                          for key in sorted(set(mine[name]) & set(theirs[name])) if mine[name][key] != theirs[name][key]]
        else:
            differing.append((name, mine[name], theirs[name]))
    return differing


def _plain(value):
    """A jsonargparse Namespace as a plain dict (for messages)."""
    return value.as_dict() if hasattr(value, "as_dict") else value


def read_checkpoint(path: str) -> dict:
    """The checkpoint at ``path``, memory-mapped (its pickled structure is read, its tensors are not: a paper-scale
    checkpoint with the replay buffer is ~440 MB), loaded as Lightning does (``weights_only``). A missing, unreadable
    or non-Lightning file raises :class:`ConfigurationError` naming it."""
    import zipfile

    import torch

    if not os.path.exists(path):
        raise ConfigurationError(f"--ckpt_path {path}: no such file")
    if not os.path.isfile(path):
        raise ConfigurationError(f"--ckpt_path {path}: not a file")
    if os.path.getsize(path) == 0:
        raise ConfigurationError(f"--ckpt_path {path}: the file is empty")
    try:
        # only torch's zip format can be memory-mapped; anything else is read as a legacy file (or fails to be)
        checkpoint = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load finds wrong, it is the file's problem
        raise ConfigurationError(
            f"--ckpt_path {path} cannot be read as a checkpoint (truncated or corrupt?): {_load_failure(exc)}"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigurationError(f"--ckpt_path {path} is not a Lightning checkpoint: it holds no state_dict")
    return checkpoint


def _load_failure(exc: BaseException) -> str:
    """What ``torch.load`` found wrong with a file, in words (its own messages are a paragraph on ``weights_only``
    ending in e.g. "Unsupported operand 101", the byte where a pickle opcode was expected)."""
    reason = " ".join(str(exc).split())
    operand = re.search(r"Unsupported operand (\d+)", reason)
    if operand:
        byte = int(operand.group(1))
        shown = repr(chr(byte)) if 32 <= byte < 127 else f"0x{byte:02x}"
        return (f"its bytes are neither a zip archive nor a pickle, as torch.save writes (byte {shown} where a "
                "pickle instruction was expected)")
    if "central directory" in reason:
        return "it is an incomplete zip archive (the end of the file, where the archive's index lies, is missing)"
    if "WeightsUnpickler error:" in reason:  # skip torch's paragraph on weights_only
        reason = reason.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].strip()
        reason = f"unpickling failed: {reason}"
    if isinstance(exc, (KeyError, IndexError, EOFError)) or not reason.strip():  # the legacy reader's bare errors
        return (f"its bytes are neither a zip archive nor a pickle, as torch.save writes (the legacy reader stopped "
                f"with {type(exc).__name__})")
    return reason.split(". ")[0][:200] or type(exc).__name__


def hyperparameters(checkpoint: dict, algorithm: type | None = None) -> dict:
    """The checkpoint's saved hyperparameters as its algorithm now names them, so that an older checkpoint still
    rebuilds its model (``Algorithm.current_hparams``: retired, renamed and network settings). ``algorithm``: the
    class to read them as when the checkpoint names none (one saved outside the CLI)."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict):
        return {}
    cls = algorithm_class(saved.get("_class_path")) if "_class_path" in saved else algorithm
    return cls.current_hparams(saved) if hasattr(cls, "current_hparams") else dict(saved)


def algorithm_class(class_path):
    """The hyperrl class a checkpoint names, or ``None`` (another library's class, or one this version lacks)."""
    import pydoc

    if not isinstance(class_path, str) or not class_path.startswith("hyperrl."):
        return None
    try:
        return pydoc.locate(class_path)
    except pydoc.ErrorDuringImport:
        return None


def check_checkpoint_fits(path: str, checkpoint: dict, model) -> None:
    """Raise :class:`ConfigurationError` naming ``path`` unless the checkpoint's weights fit ``model`` (same
    algorithm, critic, environment and sizes); the message names the settings that differ."""
    problem = _state_dict_mismatch(
        checkpoint["state_dict"], model.state_dict(), strict=getattr(model, "strict_loading", True)
    )
    if problem is None:
        return
    saved = hyperparameters(checkpoint, type(model))
    ours = type(model).__name__
    algorithm = str(saved.get("_class_path", "")).rsplit(".", 1)[-1]
    foreign = sorted(set(saved) - set(model.hparams) - {"_class_path", "_instantiator"})
    changed = []
    if algorithm not in ("", ours):
        changed.append(f"algorithm {algorithm} there, {ours} here")
    elif foreign:  # saved outside the CLI: no class path, but settings this algorithm does not have
        changed.append(f"another algorithm than {ours}: it has {', '.join(foreign)}")
    changed += [
        f"{key}={saved[key]!r} there, {model.hparams.get(key)!r} here"
        for key in ("env", "actor_hidden")
        if key in saved and saved[key] != model.hparams.get(key)
    ]
    for key, kind in getattr(model, "NETWORKS", {}).items():
        if key in saved and saved[key] != model.hparams.get(key):
            changed += _network_change(key, kind, saved[key], model.hparams.get(key))
    raise ConfigurationError(
        f"--ckpt_path {path} does not fit this model ({'; '.join([*changed, problem])}): "
        "use the algorithm, critic and sizes of the run that saved it"
    )


def _network_change(key: str, kind, there, here) -> list[str]:
    """``critic=MLPCritic there, SAHyperCritic here``, or for one class each setting that differs."""
    try:
        (cls_there, there_args), (cls_here, here_args) = kind.settings(there), kind.settings(here)
    except ConfigurationError:
        return [f"{key}={there!r} there, {here!r} here"]
    if cls_there is not cls_here or (isinstance(there, str) and isinstance(here, str)):  # classes, or presets
        return [f"{key}={kind.label(there)} there, {kind.label(here)} here"]
    differ = sorted(k for k in {*there_args, *here_args} if there_args.get(k) != here_args.get(k))
    return [f"{key} {k}={there_args.get(k)!r} there, {here_args.get(k)!r} here" for k in differ]


def _state_dict_mismatch(saved: dict, own: dict, strict: bool = True) -> str | None:
    """The first difference between a checkpoint's state_dict and the model's, in words; ``None`` if they fit."""

    def first(keys: list[str], what: str) -> str:
        return f"{what} {keys[0]}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")

    resized = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if resized:
        k = resized[0]
        return first(resized, "size mismatch for") + f": {list(saved[k].shape)} there, {list(own[k].shape)} here"
    missing = [k for k in own if k not in saved] if strict else []
    if missing:
        return first(missing, "the checkpoint lacks")
    unexpected = [k for k in saved if k not in own] if strict else []
    if unexpected:
        return first(unexpected, "the model has no")
    return None


def _config_name(config) -> str:
    """The run's name: the stem of the last config file (``hyperrl`` without one)."""
    files = [c for c in (config.get("config") or []) if c is not None]
    return os.path.splitext(os.path.basename(str(files[-1])))[0] if files else "hyperrl"


def run_folder_of_checkpoint(path) -> str | None:
    """The run folder a checkpoint file belongs to (``<run>/checkpoints/<file>.ckpt`` -> ``<run>``), else ``None``."""
    if path is None or not is_checkpoint_file(str(path)) or not os.path.isfile(str(path)):
        return None
    parent = os.path.dirname(os.path.abspath(str(path)))
    return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else None


def resolve_run_folder(config, subcommand: str | None) -> str | None:
    """The one place that decides where a run writes; fills ``trainer.default_root_dir`` and the file loggers'
    ``save_dir``/``name``/``version`` in ``config`` (in place) and returns the run folder.

    - a new run: ``<default_root_dir>/version_<n>``, the first free ``n``; ``default_root_dir`` defaults to
      ``runs/<config name>``;
    - ``fit --ckpt_path <run>/checkpoints/x.ckpt`` continues in ``<run>`` (same metrics.csv, TensorBoard run and
      checkpoints folder); a ``--trainer.default_root_dir`` elsewhere is refused;
    - ``validate`` of such a checkpoint writes to ``<run>/validate-<checkpoint name>``.

    Paths are made absolute, so a run resumed from another working directory keeps its checkpoint folder. Applying it
    twice changes nothing (``config.yaml`` and ``--print_config`` show the result).
    """
    trainer = config.get("trainer")
    if trainer is None:
        return None
    given = trainer.get("default_root_dir")
    given = os.path.abspath(os.fspath(given)) if given and "://" not in str(given) else given
    ckpt = config.get("ckpt_path")
    run = run_folder_of_checkpoint(ckpt)
    version = None
    if run is not None and subcommand == "fit":
        root, version = os.path.dirname(run), os.path.basename(run)
        if given is not None and given != root:
            raise ConfigurationError(
                f"--trainer.default_root_dir {given} is not allowed with --ckpt_path {ckpt}: a resumed run continues "
                f"in its own folder {run}; drop the option"
            )
    elif run is not None and given in (None, run):
        stem = os.path.splitext(os.path.basename(str(ckpt)))[0]
        root, version = run, f"{subcommand}-{stem}"
    else:
        root = given or os.path.abspath(os.path.join(RUNS_DIR, _config_name(config)))
    trainer["default_root_dir"] = root
    loggers = trainer.get("logger")
    specs = [getattr(lg, "init_args", None) for lg in loggers] if isinstance(loggers, list) else []
    specs = [s for s in specs if s is not None and "save_dir" in s]
    if not specs:
        return root
    for spec in specs:
        if str(spec["save_dir"]) not in (RUNS_DIR, root):
            raise ConfigurationError(
                f"trainer.logger save_dir={str(spec['save_dir'])!r} is not allowed: the run folder is set with "
                f"--trainer.default_root_dir (here {root})"
            )
        spec["save_dir"] = root
        if spec.get("name") in (None, "hyperrl", "lightning_logs"):
            spec["name"] = ""
    name = str(specs[0].get("name") or "")
    if version is None:
        versions = {s.get("version") for s in specs}
        version = versions.pop() if len(versions) == 1 else None
    if version is None:
        used = set()
        for spec in specs:
            folder = os.path.join(root, str(spec.get("name") or ""))
            if os.path.isdir(folder):
                used.update(d for d in os.listdir(folder) if d.startswith("version_"))
        n = 0
        while f"version_{n}" in used:
            n += 1
        version = f"version_{n}"
    for spec in specs:
        spec["version"] = version
    return os.path.join(root, name, str(version))


def checkpoint_dirs(config) -> list[tuple[str, str]]:
    """``(dirpath, what)`` of every ModelCheckpoint that names its own folder."""
    callbacks = (config.get("trainer") or {}).get("callbacks")
    found = []
    for cb in callbacks if isinstance(callbacks, list) else []:
        init = getattr(cb, "init_args", None)
        dirpath = init.get("dirpath") if init is not None else None
        if dirpath:
            found.append((str(dirpath), "checkpoint folder"))
    return found


def check_writable(path: str | None, what: str = "run folder", flag: str = "--trainer.default_root_dir") -> None:
    """Raise :class:`ConfigurationError` unless files can be created in ``path`` (or, if it does not exist yet, in
    the folders that would hold it). Creates nothing that stays: the deepest existing folder is probed with a
    temporary file, which is the truth where permission bits are not (root, read-only mounts, ``chattr +i``)."""
    if path is None or "://" in str(path):
        return
    path = os.path.abspath(str(path))
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ConfigurationError(
            f"the {what} {path} cannot be created: {existing} is a file, not a folder (set another place with "
            f"{flag})"
        )
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".hyperrl-write-check-", dir=existing)
    except OSError as exc:
        raise ConfigurationError(
            f"the {what} {path} cannot be written: {existing} is not writable ({exc.strerror or exc}); set another "
            f"place with {flag}"
        ) from exc
    os.close(fd)
    os.unlink(probe)



def version_folders(root: str) -> list[str]:
    """The ``version_<n>`` folders of a run root, by ``n``."""
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted((d for d in names if re.fullmatch(r"version_\d+", d)), key=lambda d: int(d.split("_")[1]))


def last_checkpoint_under(root: str) -> str | None:
    """``<root>/version_<n>/checkpoints/last.ckpt`` of the highest ``n`` that has one (what ``--ckpt_path last``
    resumes), else ``None``."""
    found = [os.path.join(root, v, "checkpoints", "last.ckpt") for v in version_folders(root)]
    return next((path for path in reversed(found) if os.path.isfile(path)), None)


#: The lock file of a run folder; held (``flock``) by the process that writes the run, released when it ends,
#: however it ends: the kernel drops the lock of a dead process, so a killed run never blocks the next one.
LOCK_FILE = ".hyperrl.lock"


def take_lock(path: str, owner: str, refusal: str):
    """Take the ``flock`` of the file ``path`` for this process and write ``owner`` into it; returns the open file
    (keep it open to hold the lock; the kernel drops it when the process ends, however it ends). When another live
    process holds it, raises :class:`ConfigurationError` with ``refusal`` (``{holder}``: that process's owner text)."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 - returned open: it is the lock
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigurationError(refusal.replace("{holder}", holder)) from None
    handle.truncate(0)
    handle.write(owner)
    handle.flush()
    return handle


def lock_run_folder(run: str):
    """Take the run folder's lock for this process; returns the open lock file (keep it open while the run writes,
    close it to release). Another live process holding it raises :class:`ConfigurationError` naming its pid."""
    os.makedirs(run, exist_ok=True)
    return take_lock(os.path.join(run, LOCK_FILE), str(os.getpid()),
                     f"the run folder {run} is in use by another hyperrl process (pid {{holder}}): two runs cannot "
                     "write one folder; wait for it to end, or resume another checkpoint")


def last_checkpoint(config) -> str:
    """What ``--ckpt_path last`` resumes: the newest run's ``last.ckpt`` under the run root (``--trainer.
    default_root_dir``, default ``runs/<config name>``); none there raises :class:`ConfigurationError`."""
    given = (config.get("trainer") or {}).get("default_root_dir")
    root = os.path.abspath(str(given) if given else os.path.join(RUNS_DIR, _config_name(config)))
    found = last_checkpoint_under(root)
    if found is None:
        raise ConfigurationError(
            f"--ckpt_path last: there is no {root}/version_<n>/checkpoints/last.ckpt to resume; start without "
            "--ckpt_path, or give a checkpoint file"
        )
    return found


def check_resumable(path: str, checkpoint: dict, max_steps: int | None) -> None:
    """Refuse a checkpoint whose training state is damaged or missing (``max_steps`` given: a fit resumes it), and a
    ``max_steps`` below its step (the run would end before its first step)."""
    from hyperrl.checkpoint_io import check_training_state

    problem = check_training_state(checkpoint, resuming=max_steps is not None)
    if problem is not None:
        raise ConfigurationError(f"--ckpt_path {path} {problem}")
    step = checkpoint.get("global_step")
    if max_steps is not None and max_steps >= 0 and isinstance(step, int) and max_steps < step:
        raise ConfigurationError(
            f"--trainer.max_steps {max_steps} is below the step of --ckpt_path {path} ({step}): nothing would be "
            "trained; give a larger --trainer.max_steps to continue the run"
        )


def duration_text(seconds: float) -> str:
    """``3725.0`` -> ``1:02:05``: how Lightning's ``max_time`` (``DD:HH:MM:SS``) reads, without the days."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _timer(trainer):
    """The trainer's ``Timer`` callback (``--trainer.max_time``), or ``None``."""
    from lightning.pytorch.callbacks import Timer

    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


def check_time_left(path: str, checkpoint: dict, trainer) -> None:
    """Refuse a ``--trainer.max_time`` the resumed run has already spent: Lightning's ``Timer`` counts a run's
    training time across resumes (the checkpoint carries it), so the fit would stop before its first step."""
    timer = _timer(trainer)
    state = (checkpoint.get("callbacks") or {}).get("Timer") or {}
    spent = (state.get("time_elapsed") or {}).get("train")
    limit = timer.time_remaining("train") if timer is not None else None  # its whole duration: nothing loaded yet
    if isinstance(spent, (int, float)) and limit is not None and spent >= limit:
        raise ConfigurationError(
            f"--trainer.max_time {duration_text(limit)} is already spent by the run of --ckpt_path {path}: it has "
            f"trained for {duration_text(spent)} (the limit counts a run's training time across resumes); give a larger "
            "--trainer.max_time, or none"
        )


def time_limit_reached(trainer) -> float | None:
    """The ``max_time`` (seconds) that ended this fit before ``max_steps``, else ``None``."""
    timer = _timer(trainer)
    if timer is None or trainer.global_step >= trainer.max_steps > 0 or trainer.interrupted:
        return None
    remaining = timer.time_remaining("train")
    if remaining is None or remaining > 0:
        return None
    return timer.time_elapsed("train") + remaining
