#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""serve_test.py - `kvmm serve` as clients use it: curl and the openai
package against the built binary on the default model.

    python3 tests/serve_test.py [--kvmm build/kvmm] [--model PATH]
                                [--quick] [--pylib DIR] [--device cuda]

--quick (what `make check` runs) uses the openai package only when it is
importable; without it (`make check-serve`) the package is installed with
pip into --pylib (a folder of the build, not the system) when absent, and
the openai tests are skipped, with the reason, when pip cannot. Without
the model or the binary every test is skipped. --device cuda serves (and
runs the `kvmm generate` references) on the GPU.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = None
SERVER = {}


def curl(*args, data=None):
    """curl's body and status for the arguments."""
    cmd = ["curl", "-s", "-S", "-w", "\n%{http_code}", "--max-time", "120"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        data = data if isinstance(data, str) else json.dumps(data)
    out = subprocess.run(cmd + list(args), input=data, capture_output=True,
                         text=True, check=True).stdout
    body, _, code = out.rpartition("\n")
    return body, int(code)


def url(path):
    return "http://127.0.0.1:%d%s" % (SERVER["port"], path)


def start():
    """the server on a free port; its port from its first line."""
    p = subprocess.Popen([ARGS.kvmm, "serve", "--model", ARGS.model,
                          "--port", "0", "--threads", "2",
                          "--max-seqs", "16", "--max-model-len", "1024",
                          "--kv-budget", "64MiB", "--grace", "10",
                          "--device", ARGS.device],
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"http://[^:]+:(\d+)", line)
    if not m:
        p.kill()
        raise RuntimeError("kvmm serve did not start: " + line +
                           p.stderr.read())
    SERVER.update(proc=p, port=int(m.group(1)))
    # drain what it writes later, so that it never blocks on a full pipe
    threading.Thread(target=p.stderr.read, daemon=True).start()


def openai_module():
    """the openai package, installed into --pylib if needed, or a reason."""
    if ARGS.pylib and os.path.isdir(ARGS.pylib):
        sys.path.insert(0, ARGS.pylib)
    try:
        import openai
        return openai, None
    except ImportError:
        pass
    if ARGS.quick:
        return None, "no openai package (make check-serve installs it)"
    if not ARGS.pylib:
        return None, "no openai package and no --pylib to install it into"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "--target",
                        ARGS.pylib, "openai"], capture_output=True,
                       text=True)
    if r.returncode:
        return None, "pip could not install openai: " + \
            (r.stderr.strip().splitlines() or ["?"])[-1]
    sys.path.insert(0, ARGS.pylib)
    try:
        import openai
        return openai, None
    except ImportError as e:
        return None, "openai installed but not importable: %s" % e


class Curl(unittest.TestCase):
    def setUp(self):
        if not shutil.which("curl"):
            self.skipTest("no curl")

    def test_health_models_metrics(self):
        body, code = curl(url("/health"))
        self.assertEqual((code, json.loads(body)["status"]), (200, "ok"))
        body, code = curl(url("/v1/models"))
        m = json.loads(body)
        self.assertEqual((code, m["object"]), (200, "list"))
        self.assertEqual(m["data"][0]["id"], os.path.basename(ARGS.model))
        body, code = curl(url("/metrics"))
        self.assertEqual(code, 200)
        self.assertIn("kvmm_requests_waiting ", body)
        self.assertIn('kvmm_kv_pages{tier="high"}', body)

    def test_completion(self):
        body, code = curl(url("/v1/completions"), data={
            "prompt": "The capital of France is", "max_tokens": 8,
            "temperature": 0})
        self.assertEqual(code, 200, body)
        r = json.loads(body)
        self.assertEqual(r["object"], "text_completion")
        self.assertIn(r["choices"][0]["finish_reason"], ("stop", "length"))
        u = r["usage"]
        self.assertEqual(u["total_tokens"],
                         u["prompt_tokens"] + u["completion_tokens"])

    def test_stream(self):
        req = {"messages": [{"role": "user", "content": "Say hello."}],
               "max_tokens": 16, "temperature": 0}
        body, code = curl(url("/v1/chat/completions"), data=req)
        self.assertEqual(code, 200, body)
        want = json.loads(body)["choices"][0]["message"]["content"]
        req["stream"] = True
        body, code = curl("-N", url("/v1/chat/completions"), data=req)
        self.assertEqual(code, 200)
        events = [e[6:] for e in body.split("\n\n") if e.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks)
        self.assertEqual(text, want)
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"],
                         "assistant")
        self.assertIsNotNone(chunks[-1]["choices"][0]["finish_reason"])

    def test_policies_mixed(self):
        """two requests at once under two policies, each as generate."""
        prompt = ("The history of the city is long and full of surprises. "
                  "Merchants came from the south with spices, cloth and "
                  "news of distant wars, and the people of the valley "
                  "traded grain and wool in return. Over the centuries the "
                  "town grew into a city of bridges, markets and small "
                  "workshops, each street known for a craft. Bakers, "
                  "smiths, weavers and scribes lived side by side, and "
                  "their guilds argued about taxes and festivals. In the "
                  "year of the great flood, the river rose above the old "
                  "walls and")
        pols = ("uniform:tier=k4v4", "diffkv:prune=0.05,quant=1.5")
        # 32 tokens: the two policies' greedy texts part at the 10th
        # token or the 17th, depending on the fp32 rounding of the GEMMs
        # (the CPU's tiles or prefill panels), so that 16 may not tell
        ntok = 32
        got = {}

        def ask(pol):
            got[pol] = curl(url("/v1/completions"), data={
                "prompt": prompt, "max_tokens": ntok, "temperature": 0,
                "policy": pol})

        th = [threading.Thread(target=ask, args=(p,)) for p in pols]
        for t in th:
            t.start()
        for t in th:
            t.join()
        texts = []
        for pol in pols:
            body, code = got[pol]
            self.assertEqual(code, 200, body)
            text = json.loads(body)["choices"][0]["text"]
            with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
                f.write(json.dumps({"prompt": prompt}) + "\n")
                f.flush()
                out = subprocess.run(
                    [ARGS.kvmm, "generate", "--model", ARGS.model,
                     "--device", ARGS.device, "--threads", "2", "--json",
                     "--max-tokens", str(ntok), "--policy", pol,
                     "--batch-file", f.name],
                    capture_output=True, text=True, check=True).stdout
            want = [json.loads(ln) for ln in out.splitlines()
                    if ln.startswith("{")][0]["text"]
            self.assertEqual(text, want, pol)
            texts.append(text)
        self.assertNotEqual(texts[0], texts[1])

    def test_errors(self):
        for data, path, code in (
                ('{"prompt": ', "/v1/completions", 400),
                ({"prompt": "x", "n": 2}, "/v1/completions", 400),
                ({"messages": "x"}, "/v1/chat/completions", 400),
                ({"prompt": "x", "model": "nope"}, "/v1/completions", 404),
                ({"prompt": "x", "policy": "kvcompress:rate=0.5"},
                 "/v1/completions", 400),
                ({}, "/v2/anything", 404)):
            body, got = curl(url(path), data=data)
            self.assertEqual(got, code, body)
            err = json.loads(body)["error"]
            self.assertEqual(set(err), {"message", "type", "param", "code"})
        body, got = curl(url("/v1/completions"), data="x" * (2 << 20))
        self.assertEqual(got, 413, body)


class OpenAI(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.openai, cls.why = openai_module()

    def setUp(self):
        if not self.openai:
            self.skipTest(self.why)
        self.c = self.openai.OpenAI(base_url=url("/v1"), api_key="none",
                                    max_retries=0, timeout=120)
        self.model = os.path.basename(ARGS.model)

    def test_models(self):
        ids = [m.id for m in self.c.models.list()]
        self.assertEqual(ids, [self.model])

    def test_completion_and_chat(self):
        r = self.c.completions.create(model=self.model, prompt="2, 4, 6,",
                                      max_tokens=8, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 8)
        self.assertEqual(r.choices[0].finish_reason, "length")
        body, _ = curl(url("/v1/completions"), data={
            "model": self.model, "prompt": "2, 4, 6,", "max_tokens": 8,
            "temperature": 0})
        self.assertEqual(r.choices[0].text,
                         json.loads(body)["choices"][0]["text"])
        msgs = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is the capital of Italy?"}]
        r = self.c.chat.completions.create(model=self.model, messages=msgs,
                                           max_tokens=24, temperature=0)
        want = r.choices[0].message.content
        self.assertTrue(want)
        s = self.c.chat.completions.create(
            model=self.model, messages=msgs, max_tokens=24, temperature=0,
            stream=True, stream_options={"include_usage": True})
        text, usage = "", None
        for ch in s:
            if ch.choices:
                text += ch.choices[0].delta.content or ""
            if ch.usage:
                usage = ch.usage
        self.assertEqual(text, want)
        self.assertEqual(usage.completion_tokens, r.usage.completion_tokens)

    def test_sampling_seed(self):
        kw = dict(model=self.model, prompt="Once upon a time", max_tokens=12,
                  temperature=0.9, top_p=0.95, seed=42)
        a = self.c.completions.create(**kw).choices[0].text
        b = self.c.completions.create(**kw).choices[0].text
        self.assertEqual(a, b)

    def test_errors(self):
        with self.assertRaises(self.openai.BadRequestError) as e:
            self.c.completions.create(model=self.model, prompt="x", n=2)
        self.assertIn("'n' must be 1", str(e.exception))
        with self.assertRaises(self.openai.NotFoundError):
            self.c.completions.create(model="gpt-4", prompt="x")


class Stop(unittest.TestCase):
    """last: SIGTERM stops the server, exit status 0."""

    def test_zz_sigterm(self):
        p = SERVER["proc"]
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvmm", default=os.path.join(ROOT, "build", "kvmm"))
    ap.add_argument("--model", default=os.environ.get("KVMM_MODEL") or
                    os.path.join(ROOT, "models",
                                 "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--pylib")
    ARGS, rest = ap.parse_known_args()
    sys.argv[1:] = rest
    names = ("Curl", "OpenAI", "Stop")
    if not os.path.exists(ARGS.model) or not os.access(ARGS.kvmm, os.X_OK):
        why = ARGS.model if not os.path.exists(ARGS.model) else ARGS.kvmm
        print("serve: 0 passed, 0 failed, 11 skipped (%s absent)" % why)
        return 0
    start()
    try:
        suite = unittest.TestSuite(
            unittest.defaultTestLoader.loadTestsFromTestCase(
                globals()[n]) for n in names)
        r = unittest.TextTestRunner(verbosity=0).run(suite)
    finally:
        if SERVER["proc"].poll() is None:
            SERVER["proc"].kill()
    for t, why in r.skipped:
        print("skipped %s: %s" % (t.id().split(".", 1)[1], why))
    skipped = len(r.skipped)
    failed = len(r.failures) + len(r.errors)
    print("serve: %d passed, %d failed, %d skipped" %
          (r.testsRun - failed - skipped, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
