"""sieve_curate against the CLI: in-process embeddings equal `sieve embed`'s stored ones, a
full `run` round trip read back with `Run`, errors as SieveError subclasses, progress, Ctrl-C."""

import json
import os
import shutil
import signal
import threading

import numpy as np
import pytest

import sieve_curate as sieve
from conftest import IMAGES, TINY, TINY_DINO


@pytest.fixture(scope="module")
def model():
    return sieve.Model(TINY, device="cpu")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cli, demo_copy):
    """`sieve run` by the binary over the demo corpus."""
    out = tmp_path_factory.mktemp("cli") / "run"
    summary = cli("run", demo_copy, "--out", out, "--model", TINY, "--device", "cpu", "--skip", "report")
    return out, summary


def test_embeddings_equal_the_cli_run(model, cli_run):
    out, _ = cli_run
    run = sieve.Run(out)
    meta = run.metadata().to_pydict()
    embedded = [i for i, s in enumerate(meta["status"]) if s == "embedded"]
    assert len(embedded) >= 40
    images = model.embed_images([meta["uri"][i] for i in embedded])
    assert images.dtype == np.float32 and images.shape == (len(embedded), model.dim)
    np.testing.assert_array_equal(images, run.embeddings("image")[embedded].astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=2e-3)

    captioned = [i for i in embedded if meta["caption"][i] is not None]
    assert len(captioned) >= 40
    texts = model.embed_texts([meta["caption"][i] for i in captioned])
    np.testing.assert_array_equal(texts, run.embeddings("text")[captioned].astype(np.float32))


def test_int8_model_equals_the_cli_int8_run(tmp_path, cli, model):
    out = tmp_path / "int8"
    cli("embed", IMAGES, "--out", out, "--model", TINY, "--device", "cpu", "--quantize", "int8")
    run = sieve.Run(out)
    meta = run.metadata().to_pydict()
    embedded = [i for i, s in enumerate(meta["status"]) if s == "embedded"]
    assert len(embedded) >= 6
    uris = [meta["uri"][i] for i in embedded]
    q = sieve.Model(TINY, device="cpu", quantize="int8")
    rows = q.embed_images(uris)
    np.testing.assert_array_equal(rows, run.embeddings("image")[embedded].astype(np.float32))
    f32 = model.embed_images(uris)
    assert not np.array_equal(rows, f32)
    assert (np.sum(rows * f32, axis=1) >= 0.999).all()
    with pytest.raises(sieve.InvalidArgumentError, match="int4"):
        sieve.Model(TINY, device="cpu", quantize="int4")


def test_bf16_model_is_close_to_f32_or_refused_for_the_cpu(model):
    uris = sorted(str(p) for p in IMAGES.glob("*.png"))
    assert uris
    try:
        q = sieve.Model(TINY, device="cpu", quantize="bf16")
    except sieve.InvalidArgumentError as e:
        # A CPU without AVX-512 BF16: refused at load, saying why.
        assert "AVX-512 BF16" in str(e)
        return
    rows, f32 = q.embed_images(uris), model.embed_images(uris)
    assert not np.array_equal(rows, f32)
    assert (np.sum(rows * f32, axis=1) >= 0.999).all()


def test_image_inputs_bytes_and_pil_match_paths(model):
    PIL = pytest.importorskip("PIL.Image")
    pngs = sorted(IMAGES.glob("*.png"))
    assert pngs
    by_path = model.embed_images(pngs)
    by_bytes = model.embed_images([p.read_bytes() for p in pngs])
    np.testing.assert_array_equal(by_path, by_bytes)
    by_pil = model.embed_images([PIL.open(p) for p in pngs])
    np.testing.assert_array_equal(by_path, by_pil)


def test_run_round_trip(tmp_path, demo_copy, cli_run):
    cli_out, cli_summary = cli_run
    out = tmp_path / "run"
    seen = set()
    summary = sieve.run(
        demo_copy, out, model=str(TINY), device="cpu", skip=["report"], progress=lambda what, *_: seen.add(what)
    )
    assert "embedding" in seen
    assert summary.keys() == cli_summary.keys()
    assert summary["embed"]["manifest"]["counts"] == cli_summary["embed"]["manifest"]["counts"]

    run = sieve.Run(out)
    meta = run.metadata()
    counts = summary["embed"]["manifest"]["counts"]
    assert meta.num_rows == counts["records"]
    assert run.embeddings("image").shape == (meta.num_rows, 16)
    assert run.embeddings("text").shape == (meta.num_rows, 16)
    cli_read = sieve.Run(cli_out)
    assert run.duplicates().equals(cli_read.duplicates())
    assert run.pairs().equals(cli_read.pairs())
    assert run.quality().equals(cli_read.quality())
    without_path = lambda d: {k: v for k, v in d.items() if k != "run"}  # noqa: E731
    assert without_path(run.diversity()) == without_path(cli_read.diversity())
    assert set(run.summary()) == {"embed", "dedup", "score", "quality", "diversity"}
    assert run.summary()["dedup"] == summary["dedup"]["summary"]

    # Rerunning the same call does nothing new: every stage is already done.
    again = sieve.run(demo_copy, out, model=str(TINY), device="cpu", skip=["report"], progress=False)
    assert again["embed"]["manifest"] == summary["embed"]["manifest"]

    # One stage at a time, options named like the flags.
    dedup = sieve.dedup(out, image_threshold=0.99, keep="largest", progress=False)
    assert dedup["thresholds"]["image"] == pytest.approx(0.99)
    picked = sieve.select(out, budget=10, progress=False)
    assert picked["selected"] == 10
    assert len((out / "selection" / "keep.txt").read_text().split()) == 10
    report = sieve.report(out, progress=False)
    assert (out / "report.html").is_file() and isinstance(report, dict)


def test_pandas_reads_tables(cli_run):
    pd = pytest.importorskip("pandas")
    df = sieve.Run(cli_run[0]).metadata().to_pandas()
    assert isinstance(df, pd.DataFrame) and "uri" in df.columns


def test_progress_callback(model):
    seen = []
    model.embed_images(sorted(IMAGES.glob("*.png")), progress=lambda *a: seen.append(a))
    assert seen and seen[-1][0] == "embedding" and seen[-1][1] == seen[-1][2] > 0


def test_errors_carry_sieves_message(tmp_path, model):
    with pytest.raises(sieve.ModelError, match="cannot load model"):
        sieve.Model(tmp_path / "no-such-model", device="cpu")
    with pytest.raises(sieve.InvalidArgumentError, match="cpu, cuda"):
        sieve.Model(TINY, device="tpu")
    with pytest.raises(sieve.InvalidArgumentError, match="item 1 cannot be embedded: not-an-image"):
        model.embed_images([(IMAGES / "alpha.png").read_bytes(), b"hello"])
    with pytest.raises(sieve.ModelError, match="no text tower"):
        sieve.Model(TINY_DINO, device="cpu").embed_texts(["a cat"])
    with pytest.raises(sieve.SieveError, match="no-such-run"):
        sieve.dedup(tmp_path / "no-such-run", progress=False)
    with pytest.raises(sieve.InvalidArgumentError, match="--image-threshold"):
        sieve.dedup(tmp_path, image_threshold=7, progress=False)
    with pytest.raises(sieve.InvalidArgumentError, match="--no-such-flag"):
        sieve.dedup(tmp_path, no_such_flag=1, progress=False)
    with pytest.raises(sieve.RunError, match="no run.json"):
        sieve.Run(tmp_path)
    assert issubclass(sieve.RunError, sieve.SieveError) and issubclass(sieve.SieveError, Exception)


def big_jpeg():
    """A 1200×1200 picture of noise as JPEG: slow enough to decode (a few ms) that embedding a
    few hundred copies lasts well past the 100 ms in which a signal is seen, on any machine."""
    PIL = pytest.importorskip("PIL.Image")
    import io

    pixels = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def many_images(folder, n):
    folder.mkdir()
    data = big_jpeg()
    for i in range(n):
        (folder / f"{i:05}.jpg").write_bytes(data)
    return folder


@pytest.fixture
def ctrl_c():
    """Python's own Ctrl-C handler for the test: a process started with SIGINT ignored (a
    background job of a shell without job control, nohup) never turns SIGINT into
    KeyboardInterrupt, which is what these tests are about."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_soon(delay=0.01):
    """A progress callback that, at the first batch done, has SIGINT sent to this process from
    another thread after `delay` seconds, while the calling thread waits in sieve: Ctrl-C in
    the middle of the work."""
    state = {"armed": False}

    def callback(what, done, total):
        if done > 0 and not state["armed"]:
            state["armed"] = True
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()

    return callback


def test_ctrl_c_stops_embed_and_the_run_resumes(tmp_path, ctrl_c):
    n = 120
    inputs = many_images(tmp_path / "in", n)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        sieve.embed(inputs, out, model=str(TINY), device="cpu", batch_size=2, part_size=8, progress=interrupt_soon())
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["complete"] is False
    with pytest.raises(sieve.RunError, match="unfinished"):
        sieve.Run(out)
    # The same call resumes and finishes; every record is there once.
    done = sieve.embed(inputs, out, model=str(TINY), device="cpu", batch_size=2, part_size=8, progress=False)
    assert done["complete"] is True and done["counts"]["embedded"] == n
    resumed = sieve.Run(out)
    meta = resumed.metadata().to_pydict()
    assert sorted(meta["id"]) == list(range(n)) == meta["id"]
    # Many parts of 8 rows, read into one array aligned with the metadata.
    images = resumed.embeddings("image")
    assert images.shape == (n, 16) and len(resumed.manifest["parts"]) == -(-n // 8)
    np.testing.assert_allclose(np.linalg.norm(images.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # Or part by part, each memory-mapped: the same rows.
    parts = resumed.embedding_parts("image")
    assert len(parts) == len(resumed.manifest["parts"])
    assert all(isinstance(p, np.memmap) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), images)


def test_ctrl_c_stops_model_embedding(ctrl_c):
    model = sieve.Model(TINY, device="cpu", batch_size=2)
    images = [big_jpeg()] * 120
    with pytest.raises(KeyboardInterrupt):
        model.embed_images(images, progress=interrupt_soon())
    # The model is still usable afterwards.
    assert model.embed_images(images[:3]).shape == (3, 16)


def test_an_exception_in_the_progress_callback_stops_the_work(model):
    class Stop(Exception):
        pass

    def callback(what, done, total):
        if done > 0:
            raise Stop()

    with pytest.raises(Stop):
        model.embed_images([big_jpeg()] * 100, progress=callback)


def test_a_call_from_a_progress_callback_is_refused(model):
    errors = []

    def callback(what, done, total):
        try:
            model.embed_texts(["a cat"])
        except sieve.SieveError as e:
            errors.append(str(e))

    model.embed_images(sorted(IMAGES.glob("*.png")), progress=callback)
    assert errors and "already running" in errors[0]
