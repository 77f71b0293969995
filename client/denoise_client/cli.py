"""``denoise-client``: denoise, encode and reconstruct from the shell, file by file or a whole folder."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from denoise_client.client import URL_ENV, Client, Retry, default_url
from denoise_client.errors import DenoiseError, TransportFailure

BATCH = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoise-client", description="Call a denoise service.")
    parser.add_argument("--url", default=None, help=f"service address (default: ${URL_ENV} or http://127.0.0.1:8000)")
    parser.add_argument("--model", help="model name (default: the server's default)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--retries", type=int, default=3, help="retries on connection errors and 503 (default 3)")
    sub = parser.add_subparsers(dest="command", required=True)
    denoise = sub.add_parser("denoise", help="denoise a PNG, or every PNG in a folder")
    denoise.add_argument("input", type=Path, help="a PNG file, or a folder of PNGs")
    denoise.add_argument("-o", "--output", type=Path, required=True, help="output PNG, or output folder")
    encode = sub.add_parser("encode", help="write an image's latent as JSON")
    encode.add_argument("input", type=Path)
    encode.add_argument("-o", "--output", type=Path, help="JSON file (default: standard output)")
    reconstruct = sub.add_parser("reconstruct", help="decode a latent JSON (from encode) to a PNG")
    reconstruct.add_argument("input", type=Path, help="latent JSON, or an image to encode-then-decode")
    reconstruct.add_argument("-o", "--output", type=Path, required=True)
    for command in (denoise, encode, reconstruct):
        command.add_argument("--resize", action="store_true", help="let the server resample other sizes to 28x28")
        command.add_argument("--invert", action="store_true", help="the input is dark on light")
    return parser


def _chunks(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _progress(done: int, total: int, failed: int, stream: TextIO) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, {failed} failed")
    stream.flush()


def denoise_folder(client: Client, source: Path, target: Path, args: argparse.Namespace) -> int:
    """Denoise every PNG in ``source`` into ``target``; a bad image is skipped and reported, not fatal."""
    paths = sorted(p for p in source.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    target.mkdir(parents=True, exist_ok=True)
    failures: dict[Path, str] = {}
    done = 0
    for chunk in _chunks(paths, BATCH):
        pending = list(chunk)
        while pending:
            try:
                images = client.denoise(pending, model=args.model, resize=args.resize, invert=args.invert)
            except DenoiseError as exc:
                if exc.index is None or not 0 <= exc.index < len(pending):
                    failures.update({path: exc.message for path in pending})
                    break
                failures[pending.pop(exc.index)] = exc.message
                continue
            for path, data in zip(pending, images, strict=True):
                (target / path.name).write_bytes(data)
            break
        done += len(chunk)
        _progress(done, len(paths), len(failures), sys.stderr)
    sys.stderr.write("\n")
    print(f"{len(paths) - len(failures)} denoised into {target}, {len(failures)} failed")
    for path, reason in failures.items():
        print(f"  {path.name}: {reason}")
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    retry = Retry(attempts=args.retries)
    with Client(args.url or default_url(), timeout=args.timeout, retry=retry) as client:
        options = {"model": args.model, "resize": args.resize, "invert": args.invert}
        if args.command == "denoise":
            if args.input.is_dir():
                return denoise_folder(client, args.input, args.output, args)
            args.output.write_bytes(client.denoise(args.input, **options))
        elif args.command == "encode":
            text = json.dumps(client.encode(args.input, **options))
            if args.output:
                args.output.write_text(text + "\n")
            else:
                print(text)
        elif args.command == "reconstruct":
            source = args.input
            if args.input.suffix.lower() == ".json":
                source = json.loads(args.input.read_text())
            result = client.reconstruct(source, **options)
            if isinstance(result, list):  # several latents: out-0.png, out-1.png, ...
                for index, data in enumerate(result):
                    args.output.with_name(f"{args.output.stem}-{index}{args.output.suffix}").write_bytes(data)
            else:
                args.output.write_bytes(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except DenoiseError as exc:
        print(f"error: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (TransportFailure, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
