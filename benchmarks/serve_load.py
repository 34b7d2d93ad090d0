"""Load, disconnects and hostile requests against `lmforge serve` on loopback.

Starts real servers (subprocesses on 127.0.0.1, a free port) over one run and measures:

  1. load        N requests (default 1,000) at concurrency 16, half streaming, prompts of 1-30
                 words (at most 120 characters), max_tokens 16-128, temperature 0.8: errors,
                 total tokens/s, p50/p99 time to first token (streaming requests, client side)
  2. one at a time  the same mix (--baseline-requests of them) against a --max-batch 1 server:
                 tokens/s, and the batching speed-up
  3. disconnects 100 clients that hang up after a random number of chunks: the next request
                 is answered normally, the batch is empty, RSS back near its baseline
  4. hostile     40+ malformed or hostile requests: each gets its documented status and an
                 OpenAI-shaped error; the server still answers afterwards

Default model: nanoGPT's CPU recipe (4 layers, 4 heads, d_model 128, context 256, char-level)
trained one step on the bundled Tiny Shakespeare (speed does not depend on the weights),
created once under the lmforge cache. --run serves any run instead; `--run smollm2` serves
SmolLM2-135M-Instruct, the real model (fetched and converted once, as `make chat` does).

    python benchmarks/serve_load.py                          # the full figures
    python benchmarks/serve_load.py --requests 200 --baseline-requests 50 --disconnects 30
    python benchmarks/serve_load.py --run smollm2 --requests 300 --baseline-requests 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmforge.cache import cache_root

KEY = "bench-key"
AUTH = {"authorization": f"Bearer {KEY}"}
WORDS = ["to", "be", "or", "not", "to", "be", "that", "is", "the", "question", "whether", "tis", "nobler", "in", "the", "mind", "to", "suffer", "the", "slings", "and", "arrows", "of", "outrageous", "fortune"]


def default_run() -> Path:
    run = cache_root() / "bench" / "serve-gpt-1step"
    if not (run / "model_config.json").exists():
        from lmforge.cli import main

        run.parent.mkdir(parents=True, exist_ok=True)
        assert main(["pretrain", "--out", str(run), "model.n_layers=4", "model.n_heads=4",
                     "model.d_model=128", "model.max_len=256", "model.bias=false",
                     "train.max_steps=1", "train.eval_every=1", "train.eval_batches=1",
                     "train.progress=false", "train.sample_tokens=0"]) == 0
    return run


class Server:
    """`lmforge serve` in a subprocess; stops it with SIGTERM."""

    def __init__(self, run: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge", "serve", str(run), "--port", "0", "--device", "cpu",
             "--api-key", KEY, "--max-queue", "4096", "--max-prompt-tokens", "200", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if " on " not in line:
            raise SystemExit(f"server did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split(" on ")[1].split()[0].rstrip("/")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def workload(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 30))
        prompt = " ".join(words)[:120]  # + max_tokens fits the default model's 256 positions
        jobs.append({"model": None, "prompt": prompt, "max_tokens": rng.randint(16, 128),
                     "temperature": 0.8, "seed": i, "stream": i % 2 == 0,
                     "stream_options": {"include_usage": True}})
    return jobs


async def one(client: httpx.AsyncClient, url: str, body: dict) -> tuple[int, float | None]:
    """(completion tokens, time to first token or None); raises on any error."""
    t0 = time.perf_counter()
    if not body["stream"]:
        res = await client.post(url + "/v1/completions", json=body)
        res.raise_for_status()
        return res.json()["usage"]["completion_tokens"], None
    ttft, tokens = None, None
    async with client.stream("POST", url + "/v1/completions", json=body) as res:
        res.raise_for_status()
        async for line in res.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if ttft is None and any(c["text"] for c in event["choices"]):
                ttft = time.perf_counter() - t0
    if tokens is None:
        raise RuntimeError("stream ended without its usage chunk")
    return tokens, ttft


async def load(url: str, model: str, n: int, concurrency: int, seed: int = 0) -> dict:
    jobs = workload(n, seed)
    sem = asyncio.Semaphore(concurrency)
    results, errors = [], []

    async def run(body):
        async with sem:
            try:
                results.append(await one(client, url, {**body, "model": model}))
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors.append(repr(err))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(headers=AUTH, timeout=300) as client:
        await asyncio.gather(*(run(b) for b in jobs))
    wall = time.perf_counter() - t0
    tokens = sum(t for t, _ in results)
    ttfts = sorted(t for _, t in results if t is not None)
    pick = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")
    return {"requests": n, "errors": len(errors), "first_errors": errors[:3], "seconds": wall,
            "tokens": tokens, "tokens_per_s": tokens / wall, "ttft_p50": pick(0.50),
            "ttft_p99": pick(0.99)}


async def wait_idle(url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            health = (await client.get(url + "/health")).json()
            if (health["batch"] == 0 and health["queue"] == 0) or time.monotonic() > deadline:
                return health
            await asyncio.sleep(0.1)


async def disconnects(server: Server, model: str, clients: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    await wait_idle(server.url)
    before = server.rss_mb()

    async def hang_up(i: int):
        body = {"model": model, "prompt": " ".join(rng.choices(WORDS, k=rng.randint(1, 20))),
                "max_tokens": 200, "stream": True, "temperature": 0.8, "seed": i}
        after = rng.randint(0, 30)  # chunks read before hanging up (0: right after the headers)
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as client, \
                client.stream("POST", server.url + "/v1/completions", json=body) as res:
            k = 0
            async for _ in res.aiter_lines():
                k += 1
                if k >= after:
                    break  # leaving the block closes the connection mid-stream

    await asyncio.gather(*(hang_up(i) for i in range(clients)))
    health = await wait_idle(server.url)
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
        t0 = time.perf_counter()
        res = await client.post(server.url + "/v1/completions",
                                json={"model": model, "prompt": "to be", "max_tokens": 16})
        next_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    after_mb = server.rss_mb()
    ok = res.status_code == 200 and res.json()["choices"][0]["finish_reason"] in ("stop", "length")
    return {"clients": clients, "next_request_ok": ok, "next_request_s": next_s,
            "batch_after": health["batch"], "queue_after": health["queue"],
            "rss_before_mb": before, "rss_after_mb": after_mb}


def hostile_cases(model: str) -> list[tuple[str, str, str, dict, bytes | None, int]]:
    """(name, method, path, headers, body, expected status)."""
    j = lambda obj: json.dumps(obj).encode()
    c = lambda **kw: j({"model": model, "prompt": "to be", **kw})
    chat = lambda msgs: j({"model": model, "messages": msgs})
    P, C = "/v1/completions", "/v1/chat/completions"
    cases = [
        ("bad JSON", "POST", P, {}, b"{", 400), ("JSON array", "POST", P, {}, b"[1]", 400),
        ("JSON string", "POST", P, {}, b'"hi"', 400), ("empty body", "POST", P, {}, b"", 400),
        ("invalid UTF-8", "POST", P, {}, b'{"prompt": "\xff\xfe"}', 400),
        ("deep nesting", "POST", P, {}, b"[" * 100000 + b"]" * 100000, 400),
        ("max_tokens string", "POST", P, {}, c(max_tokens="x"), 400),
        ("max_tokens negative", "POST", P, {}, c(max_tokens=-5), 400),
        ("max_tokens huge", "POST", P, {}, c(max_tokens=10**9), 400),
        ("max_tokens float", "POST", P, {}, c(max_tokens=2.5), 400),
        ("temperature string", "POST", P, {}, c(temperature="hot"), 400),
        ("temperature negative", "POST", P, {}, c(temperature=-1), 400),
        ("temperature NaN", "POST", P, {}, b'{"prompt": "a", "temperature": NaN}', 400),
        ("top_p zero", "POST", P, {}, c(top_p=0), 400), ("top_p two", "POST", P, {}, c(top_p=2), 400),
        ("top_k negative", "POST", P, {}, c(top_k=-1), 400),
        ("n zero", "POST", P, {}, c(n=0), 400), ("n negative", "POST", P, {}, c(n=-1), 400),
        ("n huge", "POST", P, {}, c(n=1000), 400), ("n string", "POST", P, {}, c(n="2"), 400),
        ("five stops", "POST", P, {}, c(stop=["a", "b", "c", "d", "e"]), 400),
        ("stop number", "POST", P, {}, c(stop=123), 400),
        ("prompt missing", "POST", P, {}, j({"model": model}), 400),
        ("prompt number", "POST", P, {}, c(prompt=42), 400),
        ("prompt empty list", "POST", P, {}, c(prompt=[]), 400),
        ("prompt bad id", "POST", P, {}, c(prompt=[-1]), 400),
        ("prompt mixed ids", "POST", P, {}, c(prompt=[[1, "a"]]), 400),
        ("prompt too long", "POST", P, {}, c(prompt="x" * 1000), 400),
        ("logprobs too many", "POST", P, {}, c(logprobs=99), 400),
        ("seed string", "POST", P, {}, c(seed="x"), 400),
        ("seed past int64", "POST", P, {}, c(seed=2**70), 400),
        ("stream string", "POST", P, {}, c(stream="yes"), 400),
        ("presence_penalty out of range", "POST", P, {}, c(presence_penalty=5), 400),
        ("huge body", "POST", P, {}, c(prompt="x" * (2 << 20)), 413),
        ("unknown model", "POST", P, {}, c(model="gpt-4"), 404),
        ("unknown route", "POST", "/v1/nothing", {}, b"{}", 404),
        ("unknown model id", "GET", "/v1/models/nope", {}, None, 404),
        ("GET completions", "GET", P, {}, None, 405),
        ("DELETE models", "DELETE", "/v1/models", {}, None, 405),
        ("missing auth", "POST", P, {"authorization": ""}, c(), 401),
        ("wrong key", "POST", P, {"authorization": "Bearer nope"}, c(), 401),
        ("chat without messages", "POST", C, {}, j({"model": model}), 400),
        ("chat messages string", "POST", C, {}, chat("hi"), 400),
        ("chat bad role", "POST", C, {}, chat([{"role": "wizard", "content": "x"}]), 400),
        ("chat image part", "POST", C, {}, chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}]), 400),
        ("classify a language model", "POST", "/v1/classify", {}, j({"input": ["x"]}), 400),
    ]
    return cases


async def hostile(url: str, model: str) -> dict:
    failures = []
    cases = hostile_cases(model)
    async with httpx.AsyncClient(timeout=60) as client:
        for name, method, path, headers, body, status in cases:
            hdrs = {**AUTH, "content-type": "application/json", **headers}
            hdrs = {k: v for k, v in hdrs.items() if v}
            res = await client.request(method, url + path, headers=hdrs, content=body)
            try:
                err = res.json()["error"]
                shaped = set(err) == {"message", "type", "param", "code"} and bool(err["message"])
            except Exception:  # noqa: BLE001 - not JSON, or not OpenAI's shape
                shaped = False
            if res.status_code != status or not shaped:
                failures.append(f"{name}: got {res.status_code} {res.text[:120]!r}, want {status}")
        alive = await client.post(url + "/v1/completions", headers=AUTH,
                                  json={"model": model, "prompt": "to be", "max_tokens": 4})
    return {"cases": len(cases), "failures": failures, "answers_after": alive.status_code == 200}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run directory to serve (default: a 1-step nanoGPT-size "
                                      "GPT; 'smollm2': SmolLM2-135M-Instruct, fetched as make chat does)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--baseline-requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--disconnects", type=int, default=100)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.run == "smollm2":
        from lmforge.chat.demo import smollm2_run

        args.run = str(smollm2_run())
    run = Path(args.run) if args.run else default_run()
    model = run.name
    figures: dict = {"run": str(run)}
    server = Server(run, "--max-batch", str(args.concurrency))
    try:
        asyncio.run(load(server.url, model, 16, args.concurrency, seed=99))  # warm-up
        figures["load"] = asyncio.run(load(server.url, model, args.requests, args.concurrency))
        figures["disconnects"] = asyncio.run(disconnects(server, model, args.disconnects))
        figures["hostile"] = asyncio.run(hostile(server.url, model))
    finally:
        figures["exit_code_after_sigterm"] = server.stop()
    single = Server(run, "--max-batch", "1")
    try:
        figures["one_at_a_time"] = asyncio.run(load(single.url, model, args.baseline_requests,
                                                    args.concurrency))
    finally:
        single.stop()
    L, S, D, H = figures["load"], figures["one_at_a_time"], figures["disconnects"], figures["hostile"]
    ratio = L["tokens_per_s"] / S["tokens_per_s"]
    figures["speedup"] = ratio
    print(f"serving {run} (loopback, {os.cpu_count()} CPUs)")
    print(f"load        {L['requests']} requests, concurrency {args.concurrency}: {L['errors']} errors, "
          f"{L['tokens']} tokens in {L['seconds']:.1f} s = {L['tokens_per_s']:.0f} tokens/s; "
          f"time to first token p50 {L['ttft_p50'] * 1000:.0f} ms, p99 {L['ttft_p99'] * 1000:.0f} ms")
    print(f"one at a time  {S['requests']} requests (--max-batch 1): {S['errors']} errors, "
          f"{S['tokens_per_s']:.0f} tokens/s, ttft p50 {S['ttft_p50'] * 1000:.0f} ms")
    print(f"batching speed-up  {ratio:.1f}x (target >= 4x)")
    print(f"disconnects {D['clients']} clients hung up mid-stream: next request "
          f"{'answered' if D['next_request_ok'] else 'FAILED'} in {D['next_request_s'] * 1000:.0f} ms, "
          f"batch {D['batch_after']}, queue {D['queue_after']}, RSS {D['rss_before_mb']:.0f} -> "
          f"{D['rss_after_mb']:.0f} MB")
    print(f"hostile     {H['cases']} requests: {H['cases'] - len(H['failures'])} answered as documented"
          f"{'' if not H['failures'] else '; FAILED: ' + '; '.join(H['failures'])}; server "
          f"{'still answers' if H['answers_after'] else 'STOPPED ANSWERING'}")
    print(f"SIGTERM     exit code {figures['exit_code_after_sigterm']}")
    if L["first_errors"] or S["first_errors"]:
        print("first errors:", L["first_errors"] + S["first_errors"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    bad = (L["errors"] or S["errors"] or H["failures"] or not H["answers_after"]
           or not D["next_request_ok"] or D["batch_after"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
