"""sieve in Python, in process: curate image–text training data without a subprocess.

- :class:`Model` embeds images and captions in memory, as ``sieve embed`` stores them;
- :func:`run` runs every stage (``sieve run``), and :func:`embed`, :func:`dedup`, :func:`score`,
  :func:`quality`, :func:`diversity`, :func:`select`, :func:`report` run one each, with keyword
  options named like the command line's flags (``min_score=0.2`` is ``--min-score 0.2``);
  each returns the summary ``--json`` prints, as a dict;
- :class:`Run` reads a run directory: tables as ``pyarrow.Table``, embeddings as NumPy arrays.

Errors are :class:`SieveError` subclasses carrying sieve's message. Long calls release the GIL,
report progress (a tqdm bar when tqdm is installed, or your callback) and stop on Ctrl-C with
``KeyboardInterrupt``, leaving a run directory that the same call resumes. See docs/python.md.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from . import _sieve
from ._sieve import DeviceError, InvalidArgumentError, ModelError, RunError, SieveError

__all__ = [
    "Model",
    "Run",
    "run",
    "embed",
    "dedup",
    "score",
    "quality",
    "diversity",
    "select",
    "report",
    "audit",
    "classify",
    "command",
    "version",
    "SieveError",
    "InvalidArgumentError",
    "ModelError",
    "DeviceError",
    "RunError",
]

PathLike = Union[str, "os.PathLike[str]"]
#: ``callback(what, done, total)``: ``what`` names the loop (``"embedding"``, ``"exact search"``…).
ProgressCallback = Callable[[str, int, int], Any]
Progress = Union[bool, None, ProgressCallback]


def version() -> str:
    """sieve's version and build features, as ``sieve --version`` prints them."""
    return _sieve.version()


class _Tqdm:
    """A progress callback drawing one tqdm bar per loop (``tqdm.auto``: a widget in Jupyter)."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._what: Optional[str] = None

    def __call__(self, what: str, done: int, total: int) -> None:
        if self._bar is None or what != self._what or done < self._bar.n:
            self.close()
            self._bar = self._tqdm(total=total, desc=what, leave=False)
            self._what = what
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _callback(progress: Progress) -> Optional[ProgressCallback]:
    """The callback for ``progress``: a callable as is, ``False`` none, ``True``/``None`` tqdm
    when it is installed (``None``: silently nothing without it; ``True``: an error)."""
    if callable(progress):
        return progress
    if progress is False:
        return None
    try:
        return _Tqdm()
    except ImportError:
        if progress is True:
            raise
        return None


def _call(fn: Callable[..., Any], *args: Any, progress: Progress) -> Any:
    cb = _callback(progress)
    try:
        return fn(*args, cb)
    finally:
        if isinstance(cb, _Tqdm):
            cb.close()


# ---------------------------------------------------------------------------------------------
# Model


def _image_bytes(item: Any) -> bytes:
    """An image as encoded bytes: bytes as they are, a path read, a PIL image saved as PNG
    (lossless, so the decoded pixels are the image's own)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    if hasattr(item, "save") and hasattr(item, "mode"):  # a PIL.Image.Image
        buf = io.BytesIO()
        item.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"expected a path, bytes or a PIL image, got {type(item).__name__}")


def _array(packed: Any) -> np.ndarray:
    data, rows, dim = packed
    return np.frombuffer(data, dtype=np.float32).reshape(rows, dim)


class Model:
    """An encoder (CLIP, OpenCLIP, SigLIP or DINOv2) loaded once, embedding in memory.

    ``name_or_path``: a local folder (config.json, preprocessor_config.json, tokenizer.json,
    model.safetensors) or a Hugging Face repo id, as ``sieve embed --model``. ``device``:
    ``auto``, ``cpu``, ``cuda[:N]`` or ``metal[:N]``. ``batch_size``: ``"auto"`` or a number.
    ``quantize="int8"`` or ``"bf16"``: int8 or bf16 linear layers on the CPU, as ``sieve embed
    --quantize`` (bf16 needs AVX-512 BF16).

    Rows are L2-normalised float32 values rounded to float16 exactly as ``sieve embed`` stores
    them, so they equal the run directory's rows for the same files, model and device.
    """

    def __init__(
        self,
        name_or_path: PathLike,
        device: str = "auto",
        revision: Optional[str] = None,
        *,
        batch_size: Union[int, str] = "auto",
        quantize: Optional[str] = None,
    ) -> None:
        self._inner = _sieve.Model(os.fspath(name_or_path), device, revision, str(batch_size), quantize)

    @property
    def dim(self) -> int:
        """Width of an embedding."""
        return self._inner.dim

    @property
    def device(self) -> str:
        """The device, as run.json records it."""
        return self._inner.device

    @property
    def batch_size(self) -> int:
        """Items per forward pass."""
        return self._inner.batch_size

    @property
    def info(self) -> Dict[str, Any]:
        """The model's record, as run.json's ``model`` (id, source, revision, digest…)."""
        return json.loads(self._inner.info_json)

    def embed_images(self, images: Iterable[Any], *, progress: Progress = None) -> np.ndarray:
        """Embeds images (paths, encoded bytes or PIL images): a float32 array ``[n, dim]``.

        An image that cannot be decoded raises :class:`InvalidArgumentError` naming its position
        and sieve's skip reason (``decode-error``, ``too-many-pixels``…).
        """
        data = [_image_bytes(i) for i in images]
        return _array(_call(self._inner.embed_image_bytes, data, progress=progress))

    def embed_texts(self, texts: Sequence[str], *, progress: Progress = None) -> np.ndarray:
        """Embeds captions (trimmed, tokenised and truncated as ``sieve embed`` does): a float32
        array ``[n, dim]``. A model without a text tower raises :class:`ModelError`."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings, not one string")
        return _array(_call(self._inner.embed_text_list, [str(t) for t in texts], progress=progress))

    def __repr__(self) -> str:
        return f"Model({self.info.get('id')!r}, device={self.device!r})"


# ---------------------------------------------------------------------------------------------
# Commands


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(options: Dict[str, Any]) -> List[str]:
    """Keyword options as flags: ``min_score=0.2`` → ``--min-score 0.2``, ``True`` → the bare
    flag, ``False``/``None`` → left out, a list or tuple → comma-separated."""
    argv: List[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(_flag(name))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        argv += [_flag(name), str(value)]
    return argv


def command(*argv: Any, progress: Progress = None) -> Optional[Dict[str, Any]]:
    """Runs any ``sieve`` command line in process, e.g. ``command("verify", "runs/a")``; returns
    its ``--json`` summary (added when missing), or ``None`` for a command without one."""
    args = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    if "--json" not in args:
        args.append("--json")
    lines = _call(_sieve.run_command, args, progress=progress)
    return json.loads(lines[-1]) if lines else None


def _inputs(input: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    if isinstance(input, (str, os.PathLike)):
        return [os.fspath(input)]
    return [os.fspath(i) for i in input]


def run(
    input: Union[PathLike, Sequence[PathLike]],
    out: PathLike,
    *,
    model: Optional[str] = None,
    device: str = "auto",
    progress: Progress = None,
    **stage_options: Any,
) -> Dict[str, Any]:
    """``sieve run``: embed ``input`` into ``out``, then dedup, score, quality, diversity and the
    report; the summary ``sieve run --json`` prints. Options as ``sieve run``'s flags
    (``skip=["report"]``, ``threshold=0.95``, ``by="folder"``…). Resumable, like the command."""
    model_arg = ["--model", os.fspath(model)] if model is not None else []
    argv = ["run", *_inputs(input), "--out", os.fspath(out), *model_arg, "--device", device]
    return command(*argv, *_options(stage_options), progress=progress)  # type: ignore[return-value]


def embed(
    input: Union[PathLike, Sequence[PathLike]],
    out: PathLike,
    *,
    model: Optional[str] = None,
    device: str = "auto",
    progress: Progress = None,
    **options: Any,
) -> Dict[str, Any]:
    """``sieve embed``: the run's manifest (run.json) as a dict. Options as its flags
    (``batch_size=64``, ``shard="0/4"``, ``caption_col="text"``…)."""
    model_arg = ["--model", os.fspath(model)] if model is not None else []
    argv = ["embed", *_inputs(input), "--out", os.fspath(out), *model_arg, "--device", device]
    return command(*argv, *_options(options), progress=progress)  # type: ignore[return-value]


def _stage(name: str) -> Callable[..., Dict[str, Any]]:
    def stage(run: PathLike, *, progress: Progress = None, **options: Any) -> Dict[str, Any]:
        return command(name, os.fspath(run), *_options(options), progress=progress)  # type: ignore[return-value]

    stage.__name__ = stage.__qualname__ = name
    stage.__doc__ = (
        f"``sieve {name} RUN``: its ``--json`` summary as a dict. Keyword options are its flags "
        f"(``sieve {name} --help``), ``_`` for ``-``."
    )
    return stage


dedup = _stage("dedup")
score = _stage("score")
quality = _stage("quality")
diversity = _stage("diversity")
select = _stage("select")
report = _stage("report")
audit = _stage("audit")
classify = _stage("classify")


# ---------------------------------------------------------------------------------------------
# Reading a run


class Run:
    """A run directory (made by :func:`embed` or :func:`run`), read with pyarrow and NumPy."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        manifest = self.path / "run.json"
        if not manifest.is_file():
            raise RunError(f"run directory {self.path}: no run.json (not made by sieve embed)")
        self._manifest: Dict[str, Any] = json.loads(manifest.read_text())
        if not self._manifest.get("complete", False):
            raise RunError(
                f"run directory {self.path}: is an unfinished run (sieve embed was interrupted); "
                "rerun the same embed to finish it"
            )

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def manifest(self) -> Dict[str, Any]:
        """run.json: the model, preprocessing, input, counts and parts."""
        return self._manifest

    def _parts(self) -> List[str]:
        return list(self._manifest.get("parts", []))

    def _table(self, *relative: str, what: str) -> Any:
        import pyarrow.parquet as pq

        path = self.path.joinpath(*relative)
        if not path.is_file():
            raise RunError(f"run directory {self.path}: no {'/'.join(relative)} ({what} has not run)")
        return pq.read_table(path)

    def metadata(self) -> Any:
        """``metadata/part-*.parquet`` as one ``pyarrow.Table``: one row per input record, in
        input order, embedded or skipped (``status``, ``reason``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(self.path / "metadata" / f"{p}.parquet") for p in self._parts()]
        if not tables:
            raise RunError(f"run directory {self.path}: run.json lists no parts")
        return pa.concat_tables(tables)

    def duplicates(self) -> Any:
        """``dedup/groups.parquet``: one row per item in a duplicate group (``sieve dedup``)."""
        return self._table("dedup", "groups.parquet", what="sieve dedup")

    def pairs(self) -> Any:
        """``pairs.parquet``: caption fit per embedded pair (``sieve score``)."""
        return self._table("pairs.parquet", what="sieve score")

    def quality(self) -> Any:
        """``quality.parquet``: signals and flags per record (``sieve quality``)."""
        return self._table("quality.parquet", what="sieve quality")

    def embeddings(self, kind: str = "image") -> np.ndarray:
        """The ``"image"`` or ``"text"`` embeddings, float16 as stored, row i = metadata row i
        (zeros where nothing was embedded). Memory-mapped when the run has one part; a run of
        several parts is read into one array (each part is mapped, then copied once)."""
        arrays = self.embedding_parts(kind)
        if not arrays:
            raise RunError(f"run directory {self.path}: run.json lists no parts")
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def embedding_parts(self, kind: str = "image") -> List[np.ndarray]:
        """The ``"image"`` or ``"text"`` embeddings part by part, each memory-mapped (nothing is
        read until used): part k's rows are the metadata rows of run.json's k-th part, in order.
        For runs too large to hold in memory at once."""
        folder = {"image": "img_emb", "text": "text_emb"}.get(kind)
        if folder is None:
            raise InvalidArgumentError(f"invalid embeddings kind: `{kind}`; expected image or text")
        return [np.load(self.path / folder / f"{p}.npy", mmap_mode="r") for p in self._parts()]

    def _json(self, *relative: str) -> Optional[Dict[str, Any]]:
        path = self.path.joinpath(*relative)
        return json.loads(path.read_text()) if path.is_file() else None

    def diversity(self) -> Dict[str, Any]:
        """``diversity.json`` (``sieve diversity``)."""
        report = self._json("diversity.json")
        if report is None:
            raise RunError(f"run directory {self.path}: no diversity.json (sieve diversity has not run)")
        return report

    def summary(self) -> Dict[str, Any]:
        """Every stage's summary found in the run: ``embed`` (run.json's counts), ``dedup``,
        ``score``, ``quality``, ``diversity`` and ``select``; a stage not run is absent."""
        found: Dict[str, Any] = {"embed": self._manifest.get("counts", {})}
        for stage, relative in [
            ("dedup", ("dedup", "summary.json")),
            ("score", ("pairs_summary.json",)),
            ("quality", ("quality_summary.json",)),
            ("diversity", ("diversity.json",)),
            ("select", ("selection", "summary.json")),
        ]:
            value = self._json(*relative)
            if value is not None:
                found[stage] = value
        return found
