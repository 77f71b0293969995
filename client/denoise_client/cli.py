"""``denoise-client``: denoise, encode and reconstruct from the shell, file by file or a whole folder."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from denoise_client.client import API_KEY_ENV, URL_ENV, Client, Retry, default_url
from denoise_client.errors import DenoiseError, TransportFailure, Unauthorized

BATCH = 64


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes; accepted before or after the command name.

    A subcommand's copy has no defaults, so that it only overrides what was given before it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url", default=default(None), help=f"service address (default: ${URL_ENV} or http://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--api-key", default=default(None), help=f"API key, if the service needs one (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--model", default=default(None), help="model name (default: the server's default)")
    parser.add_argument("--timeout", type=float, default=default(10.0), help="seconds per request (default 10)")
    parser.add_argument(
        "--retries", type=int, default=default(3), help="retries on connection errors and 503 (default 3)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoise-client", description="Call a denoise service.")
    _add_connection_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    denoise = sub.add_parser("denoise", help="denoise a PNG, or every PNG in a folder")
    denoise.add_argument("input", type=Path, help="a PNG file, or a folder of PNGs")
    denoise.add_argument("-o", "--output", type=Path, required=True, help="output PNG, or output folder")
    denoise.add_argument("-r", "--recursive", action="store_true", help="with a folder: its sub-folders too")
    encode = sub.add_parser("encode", help="write an image's latent as JSON")
    encode.add_argument("input", type=Path)
    encode.add_argument("-o", "--output", type=Path, help="JSON file (default: standard output)")
    reconstruct = sub.add_parser("reconstruct", help="decode a latent JSON (from encode) to a PNG")
    reconstruct.add_argument("input", type=Path, help="latent JSON, or an image to encode-then-decode")
    reconstruct.add_argument("-o", "--output", type=Path, required=True)
    for command in (denoise, encode, reconstruct):
        _add_connection_options(command, defaults=False)
        command.add_argument("--resize", action="store_true", help="let the server resample other sizes to 28x28")
        command.add_argument("--invert", action="store_true", help="the input is dark on light")
    for command in (denoise, reconstruct):
        command.add_argument(
            "--reinvert", action="store_true", help="write the output dark on light (models answer light on black)"
        )
    return parser


#: Server messages name query options; the command line spells them as flags.
_QUERY_AS_FLAG = [(re.compile(r"\??\b(reinvert|resize|invert)=true"), r"--\1"), (re.compile(r"\?model="), "--model ")]


def as_cli_message(message: str) -> str:
    """``message`` with query options (``?resize=true``) written as this command's flags (``--resize``)."""
    for pattern, replacement in _QUERY_AS_FLAG:
        message = pattern.sub(replacement, message)
    return message


def _chunks(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _progress(done: int, total: int, failed: int, stream: TextIO) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, {failed} failed")
    stream.flush()


def _folder_contents(source: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """PNG files under ``source`` (its sub-folders too if ``recursive``), and everything passed over."""
    images: list[Path] = []
    skipped: list[Path] = []
    for path in sorted(source.iterdir()):
        if path.is_dir() and recursive:
            inner, passed = _folder_contents(path, recursive)
            images += inner
            skipped += passed
        elif path.is_file() and path.suffix.lower() == ".png":
            images.append(path)
        else:
            skipped.append(path)
    return images, skipped


def denoise_folder(client: Client, source: Path, target: Path, args: argparse.Namespace) -> int:
    """Denoise every PNG in ``source`` into ``target`` (the same sub-folders with ``--recursive``);
    a bad image is skipped and reported, not fatal; files and folders passed over are listed."""
    paths, skipped = _folder_contents(source, args.recursive)
    failures: dict[Path, str] = {}
    done = 0
    for chunk in _chunks(paths, BATCH):
        pending = list(chunk)
        while pending:
            try:
                images = client.denoise(
                    pending, model=args.model, resize=args.resize, invert=args.invert, reinvert=args.reinvert
                )
            except DenoiseError as exc:
                if exc.index is None or not 0 <= exc.index < len(pending):
                    failures.update({path: as_cli_message(exc.message) for path in pending})
                    break
                failures[pending.pop(exc.index)] = as_cli_message(exc.message)
                continue
            for path, data in zip(pending, images, strict=True):
                output = target / path.relative_to(source)
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_bytes(data)
            break
        done += len(chunk)
        _progress(done, len(paths), len(failures), sys.stderr)
    sys.stderr.write("\n")
    print(f"{len(paths) - len(failures)} denoised into {target}, {len(failures)} failed, {len(skipped)} skipped")
    for path, reason in failures.items():
        print(f"  failed  {path.relative_to(source)}: {reason}")
    for path in skipped:
        why = "a folder (add --recursive)" if path.is_dir() else "not a .png file"
        print(f"  skipped {path.relative_to(source)}{'/' if path.is_dir() else ''}: {why}")
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    retry = Retry(attempts=args.retries)
    with Client(args.url or default_url(), timeout=args.timeout, retry=retry, api_key=args.api_key) as client:
        options = {"model": args.model, "resize": args.resize, "invert": args.invert}
        if args.command == "denoise":
            if args.input.is_dir():
                return denoise_folder(client, args.input, args.output, args)
            args.output.write_bytes(client.denoise(args.input, reinvert=args.reinvert, **options))
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
            result = client.reconstruct(source, reinvert=args.reinvert, **options)
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
        hint = f" (give it with --api-key or ${API_KEY_ENV})" if isinstance(exc, Unauthorized) else ""
        print(f"error: {exc.status} {exc.code}: {as_cli_message(exc.message)}{hint}", file=sys.stderr)
        return 1
    except TransportFailure as exc:
        print(f"error: {exc}; set the service address with --url or ${URL_ENV}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
