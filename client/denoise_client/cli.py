"""``denoise-client``: denoise, encode and reconstruct from the shell, file by file or a whole folder.

Nothing that exists is replaced unless ``--force`` says so, and an input is never its own output. A
folder run skips the outputs an earlier run wrote (valid PNGs), so the same command run again after an
interruption goes on where it stopped; it never reads its own output folder as input. Every failure is
one line on standard error and an exit status of its own (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

import httpx

from denoise_client.client import API_KEY_ENV, PNG_SIGNATURE, URL_ENV, Client, Retry, default_url
from denoise_client.errors import DenoiseError, ProtocolViolation, TransportFailure, Unauthorized

BATCH = 64
#: The service's default body limit (``DENOISE_MAX_BODY_BYTES``): larger files are refused unread.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3
EXIT_BAD_ANSWER = 4
EXIT_INTERRUPTED = 130
#: What each exit status means (``denoise-client --help`` prints them; client/README.md lists them).
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_REFUSED: "the service refused a request or some images (its message is printed)",
    EXIT_USAGE: "a bad argument, or a local file that cannot be read or written (or would be replaced)",
    EXIT_NO_ANSWER: "no answer: nothing listens at --url, or it did not answer within --timeout",
    EXIT_BAD_ANSWER: "an answer that is not the service's (not a PNG, JSON without its fields)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a folder run says what was done",
}


class UsageError(Exception):
    """A command line that cannot run: one line saying what is wrong and what to do."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is a ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a count of 0 or more")
    return value


def _bytes(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a size in bytes of 1 or more")
    return value


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
    parser.add_argument(
        "--timeout", type=_positive, default=default(10.0), help="seconds per request, above 0 (default 10)"
    )
    parser.add_argument(
        "--retries", type=_count, default=default(3), help="retries on connection errors and 503 (default 3)"
    )
    parser.add_argument(
        "--max-bytes",
        type=_bytes,
        default=default(DEFAULT_MAX_BYTES),
        help=f"largest input file sent; larger ones are refused unread (default {DEFAULT_MAX_BYTES}, "
        "the service's default body limit)",
    )
    parser.add_argument("--force", action="store_true", default=default(False), help="replace outputs that exist")


def _parser() -> argparse.ArgumentParser:
    codes = "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = OneLineParser(
        prog="denoise-client", description="Call a denoise service.", epilog=f"Exit status: {codes}."
    )
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


# ---------- local files: read bounded, written atomically, never replaced unasked ----------


def _readable(path: Path, max_bytes: int) -> Path:
    """``path`` if it is a file of at most ``max_bytes`` (checked before anything is read)."""
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{path} is a broken symbolic link")
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise UsageError(f"{path} is {size} bytes, over --max-bytes {max_bytes}; the service would refuse it")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable(output: Path, inputs: list[Path], force: bool) -> Path:
    """``output`` if writing it replaces nothing (or ``force``) and it is none of the ``inputs``."""
    if any(_same_file(output, path) for path in inputs):
        raise UsageError(f"-o {output} is the input itself; name another file")
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; name a file")
    if output.exists() and not force:
        raise UsageError(f"{output} exists; add --force to replace it, or name another file")
    return output


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` whole or not at all (a temporary file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def _latents(path: Path, max_bytes: int) -> dict[str, Any]:
    try:
        source = json.loads(_readable(path, max_bytes).read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(source, dict) or not isinstance(source.get("latents"), list) or not source["latents"]:
        raise UsageError(f"{path} is not latents as 'encode' writes them (a JSON object with a 'latents' list)")
    return source


# ---------- folders ----------


def _chunks(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _progress(done: int, total: int, failed: int, stream: TextIO) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, {failed} failed")
    stream.flush()


def _folder_contents(source: Path, recursive: bool, exclude: Path) -> tuple[list[Path], dict[Path, str]]:
    """PNG files under ``source`` (its sub-folders too if ``recursive``, never ``exclude``: the output
    folder), and everything passed over, with why."""
    images: list[Path] = []
    skipped: dict[Path, str] = {}
    for path in sorted(source.iterdir()):
        if _same_file(path, exclude):
            continue
        if path.is_symlink() and not path.exists():
            skipped[path] = "a broken symbolic link"
        elif path.is_dir():
            if recursive:
                inner, passed = _folder_contents(path, recursive, exclude)
                images += inner
                skipped.update(passed)
            else:
                skipped[path] = "a folder (add --recursive)"
        elif path.is_file() and path.suffix.lower() == ".png":
            images.append(path)
        else:
            skipped[path] = "not a .png file"
    return images, skipped


def denoise_folder(client: Client, source: Path, target: Path, args: argparse.Namespace) -> int:
    """Denoise every PNG in ``source`` into ``target`` (the same sub-folders with ``--recursive``); a bad
    image is skipped and reported, not fatal; outputs an earlier run wrote are kept (``--force`` redoes
    them); files and folders passed over are listed. Ctrl-C or a service that stops answering ends the
    run with what was done said, so that the same command goes on from there."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"-o {target} is a file; a folder's outputs go to a folder")
    if _same_file(source, target):
        raise UsageError(f"-o {target} is the input folder itself; name another folder")
    paths, skipped = _folder_contents(source, args.recursive, target)
    failures: dict[Path, str] = {}
    todo: list[Path] = []
    done_before = 0
    for path in paths:
        output = target / path.relative_to(source)
        if output.exists() and not args.force:
            if _is_png(output):
                done_before += 1
                continue
            failures[path] = f"{output} exists and is not a PNG; --force replaces it"
            continue
        size = path.stat().st_size
        if size > args.max_bytes:
            failures[path] = f"{size} bytes, over --max-bytes {args.max_bytes}"
            continue
        todo.append(path)
    written, total = 0, len(todo) + len(failures)
    try:
        for chunk in _chunks(todo, BATCH):
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
                    _write(target / path.relative_to(source), data)
                written += len(pending)
                break
            _progress(written + len(failures), total, len(failures), sys.stderr)
    except (KeyboardInterrupt, TransportFailure, ProtocolViolation) as exc:
        sys.stderr.write("\n")
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}"
        print(
            f"{why}; {written + done_before} of {len(paths)} done (kept), {len(todo) - written} left: "
            "run the same command again to go on with them",
            file=sys.stderr,
        )
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        return EXIT_NO_ANSWER if isinstance(exc, TransportFailure) else EXIT_BAD_ANSWER
    sys.stderr.write("\n")
    print(
        f"{written} denoised into {target}, {done_before} already there, {len(failures)} failed, {len(skipped)} skipped"
    )
    for path, reason in failures.items():
        print(f"  failed  {path.relative_to(source)}: {reason}")
    for path, why in skipped.items():
        print(f"  skipped {path.relative_to(source)}{'/' if path.is_dir() else ''}: {why}")
    return EXIT_REFUSED if failures else EXIT_OK


# ---------- the commands ----------


def run(args: argparse.Namespace) -> int:
    retry = Retry(attempts=args.retries)
    with Client(args.url or default_url(), timeout=args.timeout, retry=retry, api_key=args.api_key) as client:
        options = {"model": args.model, "resize": args.resize, "invert": args.invert}
        if args.command == "denoise":
            if args.input.is_dir():
                return denoise_folder(client, args.input, args.output, args)
            source = _readable(args.input, args.max_bytes)
            output = _writable(args.output, [source], args.force)
            _write(output, client.denoise(source, reinvert=args.reinvert, **options))
        elif args.command == "encode":
            source = _readable(args.input, args.max_bytes)
            if args.output:
                _writable(args.output, [source], args.force)
            text = json.dumps(client.encode(source, **options))
            if args.output:
                _write(args.output, (text + "\n").encode())
            else:
                print(text)
        elif args.command == "reconstruct":
            path = _readable(args.input, args.max_bytes)
            latents: Any = _latents(path, args.max_bytes) if path.suffix.lower() == ".json" else path
            count = len(latents["latents"]) if isinstance(latents, dict) else 1
            outputs = (
                [args.output]
                if count == 1
                else [args.output.with_name(f"{args.output.stem}-{i}{args.output.suffix}") for i in range(count)]
            )
            for output in outputs:
                _writable(output, [path], args.force)
            result = client.reconstruct(latents, reinvert=args.reinvert, **options)
            for output, data in zip(outputs, result if isinstance(result, list) else [result], strict=True):
                _write(output, data)
    return EXIT_OK


def _no_answer_hint(exc: TransportFailure) -> str:
    if isinstance(exc.__cause__, httpx.TimeoutException) and not isinstance(exc.__cause__, httpx.ConnectTimeout):
        return "raise --timeout if the service is busy or the batch is large"
    return f"is the service running? Set its address with --url or ${URL_ENV}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DenoiseError as exc:
        hint = f" (give it with --api-key or ${API_KEY_ENV})" if isinstance(exc, Unauthorized) else ""
        print(f"error: {exc.status} {exc.code}: {as_cli_message(exc.message)}{hint}", file=sys.stderr)
        return EXIT_REFUSED
    except TransportFailure as exc:
        print(f"error: {exc}; {_no_answer_hint(exc)}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except ProtocolViolation as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_ANSWER
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
