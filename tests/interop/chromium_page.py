#!/usr/bin/env python3
"""Loads a page in headless Chromium, waits until a JavaScript condition holds, and prints
what the page shows, driven over the DevTools protocol on --remote-debugging-pipe (the
standard library only: fd 3 carries commands to Chromium, fd 4 its answers, each message
NUL-terminated JSON).

Why not --dump-dom: with --virtual-time-budget, virtual time does not advance while a fetch
is pending, and a Server-Sent Events stream always is; with --timeout the DOM is dumped at
the load event, before any event arrives.

Usage: chromium_page.py URL --until JS_EXPR --read JS_EXPR [--screenshot FILE]
       [--deadline S] [--chromium-flag=FLAG ...]
Prints one JSON object: {"ok": bool, "value": <--read result>, "protocol": <the page's
network protocol, e.g. "h2" or "h3">, "error": str}.
"""

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
]


class Pipe:
    def __init__(self, to_chrome, from_chrome):
        self.w = to_chrome
        self.r = from_chrome
        self.buf = b""
        self.next_id = 0

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def recv(self, deadline):
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, deadline=None):
        want = self.send(method, params, session)
        while True:
            msg = self.recv(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def above_4(fd):
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--until", required=True)
    ap.add_argument("--read", required=True)
    ap.add_argument("--screenshot")
    ap.add_argument("--deadline", type=float, default=30.0)
    ap.add_argument(
        "--chromium-flag", action="append", default=[], help="one more chromium flag"
    )
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    if not chromium:
        print(json.dumps({"ok": False, "error": "no chromium on PATH"}))
        return 2
    profile = tempfile.mkdtemp(prefix="alknet-chromium-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # above 4, so that placing them on 3 and 4 in the child cannot clobber one another
    to_chrome_r = above_4(to_chrome_r)
    from_chrome_w = above_4(from_chrome_w)

    def fds():
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)

    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args.chromium_flag, "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=fds,
        # 3 and 4 are what preexec_fn placed; every other descriptor is closed
        pass_fds=(3, 4),
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = Pipe(to_chrome_w, from_chrome_r)
    deadline = time.monotonic() + args.deadline
    result = {"ok": False}
    try:
        target = pipe.call(
            "Target.createTarget", {"url": "about:blank"}, deadline=deadline
        )["targetId"]
        session = pipe.call(
            "Target.attachToTarget",
            {"targetId": target, "flatten": True},
            deadline=deadline,
        )["sessionId"]
        pipe.call("Page.enable", session=session, deadline=deadline)
        pipe.call("Page.navigate", {"url": args.url}, session=session, deadline=deadline)

        def evaluate(expr):
            r = pipe.call(
                "Runtime.evaluate",
                {"expression": expr, "returnByValue": True},
                session=session,
                deadline=deadline,
            )
            return r.get("result", {}).get("value")

        while True:
            try:
                done = evaluate(args.until)
            except RuntimeError:
                done = False
            if done:
                break
            if time.monotonic() > deadline:
                result["error"] = f"condition never held: {args.until}"
                result["value"] = evaluate(args.read)
                break
            time.sleep(0.2)
        if "error" not in result:
            result["ok"] = True
            result["value"] = evaluate(args.read)
        result["protocol"] = evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        if args.screenshot:
            shot = pipe.call(
                "Page.captureScreenshot", {"format": "png"}, session=session, deadline=deadline
            )
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    except (TimeoutError, EOFError, RuntimeError) as e:
        result["error"] = str(e)
    finally:
        try:
            pipe.send("Browser.close")
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
