"""Images as images (issue 25): resnet50 INT8 served JPEGs, as TorchServe users send them.

    cd bench && ../.venv/bin/python jpeg_path.py [--seconds 10] [--rounds 3]
        [--skip-torchserve] [--skip-redis]

The same fixed JPEGs (``make_jpegs``: seeded numpy, ImageNet-like 500x375, quality 90)
go through, per round:

* raw: decode + preprocess (``trustserve.imaging``) + ONNX Runtime INT8 at batch 16 in
  this process, measured right before and right after each served point (its "adjacent
  raw", as run.py's ``measured()``: this VM's speed drifts);
* served plain (``/predictions/resnet50`` over HTTPS), sealed (the SDK's ``prepare``
  sealed to the worker, carrying the JPEG) and over Redis Streams: the frontend and the
  broker carry the encoded image; the worker decodes it inside the TEE;
* TorchServe 0.12 with ``torchserve_jpeg_handler.py`` (PIL decode, the same resize /
  crop / normalize, ONNX Runtime).

Rounds are interleaved; every served figure is divided by its own adjacent raw, and the
medians of those per-round ratios are reported. ``decoders()`` compares Pillow,
simplejpeg and PyTurboJPEG for decode + preprocess per image on the same JPEGs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, demo_models, load, served, tls_context
from loadgen import LoadResult, build_request
from PIL import Image

from trustserve import archive
from trustserve.archive import ImagePreprocessing
from trustserve.engines import load_engine
from trustserve.imaging import image_to_tensor, preprocess_image

JPEG_COUNT = 32
WIDTH, HEIGHT = 500, 375
JPEG_HEADERS = {"Content-Type": "image/jpeg"}
MODEL = "resnet50"


def make_jpegs(count: int = JPEG_COUNT) -> list[bytes]:
    """``count`` deterministic photo-like JPEGs: a 1/f-like colour field (bicubic-upsampled
    seeded noise at six scales) plus a little grain, 500x375 at quality 90 (30-45 KB)."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(25_000 + seed)
        field = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        for cells, amp in ((3, 70), (6, 40), (12, 25), (25, 16), (50, 10), (100, 6)):
            grid = rng.standard_normal((cells * HEIGHT // WIDTH + 2, cells + 2, 3))
            up = [
                np.asarray(
                    Image.fromarray(grid[..., c].astype(np.float32), "F").resize(
                        (WIDTH, HEIGHT), Image.Resampling.BICUBIC
                    )
                )
                for c in range(3)
            ]
            field += amp * np.stack(up, -1)
        grain = rng.normal(0, 2.0 + seed % 4, size=field.shape).astype(np.float32)
        pixels = rng.uniform(60, 190, size=3).astype(np.float32) + field + grain
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
            buf, "JPEG", quality=90
        )
        out.append(buf.getvalue())
    return out


def sizes(jpegs: list[bytes]) -> dict[str, float]:
    n = [len(j) for j in jpegs]
    return {"count": len(n), "min": min(n), "median": statistics.median(n), "max": max(n)}


def raw_jpeg(path: Path, jpegs: list[bytes], batch: int, threads: int, seconds: float) -> float:
    """Images per second of decode + preprocess + infer in this process (decode serial,
    the engine at ``threads``), the way one worker handles a batch of JPEGs."""
    model = archive.load(path)
    pre = model.manifest.preprocessing
    assert pre is not None, "the demo resnet50 archive has no image preprocessing"
    engine = load_engine("onnxruntime", model.payload, model.manifest, threads)
    name = model.manifest.inputs[0].name
    images = itertools.cycle(jpegs)

    def one_batch() -> None:
        engine.infer({name: np.stack([preprocess_image(next(images), pre) for _ in range(batch)])})

    one_batch()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        one_batch()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def _pillow(data: bytes, pre: ImagePreprocessing) -> np.ndarray:
    return preprocess_image(data, pre)


def decoders(jpegs: list[bytes], repeats: int = 5) -> dict[str, Any]:
    """Decode alone and decode + preprocess per image (median ms over the JPEGs, best of
    ``repeats``) for each decoder; the resize/crop/normalize is ``image_to_tensor`` for
    all, so the tensors differ only by the decode (max abs difference against Pillow's)."""
    pre = ImagePreprocessing()
    ways: dict[str, tuple[Callable[[bytes], Any], str]] = {
        "pillow": (lambda d: Image.open(io.BytesIO(d)).convert("RGB"), Image.__version__)
    }
    try:
        import simplejpeg

        ways["simplejpeg"] = (
            lambda d: Image.fromarray(simplejpeg.decode_jpeg(d, colorspace="RGB")),
            simplejpeg.__version__,
        )
    except ImportError:
        pass
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG()
        ways["pyturbojpeg"] = (
            lambda d: Image.fromarray(tj.decode(d, pixel_format=turbojpeg.TJPF_RGB)),
            turbojpeg.__version__,
        )
    except (ImportError, OSError, RuntimeError):  # no package, or no libturbojpeg
        pass
    reference = [_pillow(j, pre) for j in jpegs]
    out: dict[str, Any] = {}
    for name, (decode, version) in ways.items():
        per_decode, per_full = [], []
        for j in jpegs:
            per_decode.append(_best(lambda j=j, f=decode: f(j).load(), repeats))
            per_full.append(_best(lambda j=j, f=decode: image_to_tensor(f(j), pre), repeats))
        diff = max(
            float(np.abs(image_to_tensor(decode(j), pre) - r).max())
            for j, r in zip(jpegs, reference, strict=True)
        )
        out[name] = {
            "version": version,
            "decode_ms": statistics.median(per_decode),
            "decode_preprocess_ms": statistics.median(per_full),
            "max_abs_diff_vs_pillow": diff,
        }
    # what the worker runs today (preprocess_image: Pillow with draft(), from bytes)
    out["pillow"]["worker_preprocess_image_ms"] = statistics.median(
        _best(lambda j=j: _pillow(j, pre), repeats) for j in jpegs
    )
    return out


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def _row(r: LoadResult, raw: float) -> dict[str, Any]:
    return {
        "img_s": r.rps,
        "p50_ms": r.percentile(50),
        "p99_ms": r.percentile(99),
        "errors": r.errors,
        "client_cpu": r.client_cpu_share,
        "adjacent_raw": raw,
        "ratio": r.rps / raw if raw else None,
    }


class JpegBench:
    """The JPEG rows, one ``round(k)`` at a time (run.py interleaves them with its own)."""

    def __init__(
        self,
        models: dict[str, Path],
        *,
        threads: int = 2,
        seconds: float = 15,
        in_flight: int = 32,
        redis: bool = True,
        torchserve: bool = True,
    ) -> None:
        self.models, self.threads, self.seconds, self.in_flight = (
            models,
            threads,
            seconds,
            in_flight,
        )
        self.redis, self.torchserve = redis, torchserve
        self.jpegs = make_jpegs()
        self.rounds: list[dict[str, Any]] = []
        self.decoders: dict[str, Any] = {}

    def adjacent_raw(self) -> float:
        return raw_jpeg(self.models[MODEL], self.jpegs, 16, self.threads, self.seconds / 2)

    def measured(self, go: Callable[[], LoadResult]) -> dict[str, Any]:
        before = self.adjacent_raw()
        r = go()
        after = self.adjacent_raw()
        return _row(r, (before + after) / 2)

    def plain_requests(self, port: int) -> list[bytes]:
        host = f"localhost:{port}"
        return [build_request(host, f"/predictions/{MODEL}", j, JPEG_HEADERS) for j in self.jpegs]

    def round(self, k: int) -> None:
        got: dict[str, Any] = {"round": k}
        self.rounds.append(got)
        t, secs, n = self.threads, self.seconds, self.in_flight
        int8 = self.models[MODEL]
        with served([int8], "--threads", "1", "--workers", str(t), name="jpeg") as s:
            ctx = tls_context(s)
            plain = self.plain_requests(s.port)
            got["plain"] = self.measured(
                lambda: load("127.0.0.1", s.port, itertools.cycle(plain), n, secs, ctx)
            )
            count = int(got["plain"]["img_s"] * (secs + 4) * 1.6) + 2 * n
            pool = self.sealed_requests(s, count)
            got["sealed"] = self.measured(
                lambda: load("127.0.0.1", s.port, iter(pool), n, secs, ctx)
            )
            got["sealed"]["sent"] = count
        if self.redis:
            got["redis"] = self.served_redis()
        if self.torchserve:
            got["torchserve"] = self.served_torchserve()

    def sealed_requests(self, stack: Any, count: int) -> list[bytes]:
        from trustserve.client import ClientPolicy, TrustserveClient
        from trustserve.client.sdk import prepare

        policy = ClientPolicy.development(stack.home)
        with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as c:
            target = c.verify()
            probe = c.predict(MODEL, self.jpegs[0])  # the sealed JPEG path answers at all
            assert isinstance(probe, dict) and probe, probe
        out = []
        for i in range(count):
            p = prepare(MODEL, None, None, self.jpegs[i % len(self.jpegs)], target)
            out.append(build_request(f"localhost:{stack.port}", p.path, p.body, p.headers))
        return out

    def served_redis(self) -> dict[str, Any]:
        from tests.broker.redis_server import RedisServer

        with tempfile.TemporaryDirectory() as tmp:
            server = RedisServer(Path(tmp))
            server.start()
            try:
                extra = ["--threads", "1", "--workers", str(self.threads), "--broker", server.url()]
                with served([self.models[MODEL]], *extra, name="jpeg-redis") as s:
                    ctx, plain = tls_context(s), self.plain_requests(s.port)
                    return self.measured(
                        lambda: load(
                            "127.0.0.1",
                            s.port,
                            itertools.cycle(plain),
                            self.in_flight,
                            self.seconds,
                            ctx,
                        )
                    )
            finally:
                server.stop()

    def served_torchserve(self) -> dict[str, Any]:
        from torchserve_peer import HERE, torchserve

        from tests.support import free_port

        port = free_port()
        work = RESULTS / "run" / "torchserve-jpeg"
        onnx = self.models["onnx/resnet50-int8"]
        handler = HERE / "torchserve_jpeg_handler.py"
        with torchserve(onnx, work, port, threads=1, workers=self.threads, handler=handler):
            host = f"127.0.0.1:{port}"
            reqs = [
                build_request(host, f"/predictions/{MODEL}", j, JPEG_HEADERS) for j in self.jpegs
            ]
            return self.measured(
                lambda: load("127.0.0.1", port, itertools.cycle(reqs), self.in_flight, self.seconds)
            )

    def run_decoders(self) -> None:
        self.decoders = decoders(self.jpegs)

    def result(self) -> dict[str, Any]:
        """``res["jpeg"]``: the rounds, the medians of the per-round ratios, the decoders."""

        def median(values: list[float]) -> float | None:
            return statistics.median(values) if values else None

        def ratios(key: str) -> list[float]:
            return [r[key]["ratio"] for r in self.rounds if r.get(key, {}).get("ratio")]

        vs_ts = [
            r["sealed"]["img_s"] / r["torchserve"]["img_s"]
            for r in self.rounds
            if "sealed" in r and r.get("torchserve", {}).get("img_s")
        ]
        return {
            "model": f"{MODEL} INT8",
            "threads": self.threads,
            "seconds": self.seconds,
            "in_flight": self.in_flight,
            "rounds": self.rounds,
            "ratio": {k: median(ratios(k)) for k in ("plain", "sealed", "redis", "torchserve")},
            "sealed_vs_torchserve": median(vs_ts),
            "decoders": self.decoders,
            "jpeg_bytes": sizes(self.jpegs),
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-torchserve", action="store_true")
    p.add_argument("--skip-redis", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "jpeg.json")
    args = p.parse_args()
    bench = JpegBench(
        demo_models(),
        threads=args.threads,
        seconds=args.seconds,
        in_flight=args.in_flight,
        redis=not args.skip_redis,
        torchserve=not args.skip_torchserve,
    )
    print("JPEGs:", sizes(bench.jpegs), flush=True)
    bench.run_decoders()
    print("decoders:", json.dumps(bench.decoders, indent=1), flush=True)
    for k in range(1, args.rounds + 1):
        bench.round(k)
        print(f"round {k}:", json.dumps(bench.rounds[-1], indent=1), flush=True)
    out = bench.result()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    from report_jpeg import section

    print("\n".join(section(out)))


if __name__ == "__main__":
    main()
