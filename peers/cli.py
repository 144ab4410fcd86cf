"""``rtc-peer``: offer and answer peers on the command line (a thin layer over
:mod:`peers.session` and the workloads: :mod:`peers.workloads` (the demo's
timer), :mod:`peers.stream` (chat and pipe), :mod:`peers.files` and
:mod:`peers.file_receiver` (file transfer) and :mod:`peers.bench` (benchmark)).

The offer side names its data channel after what it wants (``data``,
``files``, ``bench``); the answer side runs what that label asks for, so
``rtc-peer bench`` and ``rtc-peer send`` work against any ``rtc-peer answer``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click

# Only what the options need is imported here: the library (aiortc, PyAV,
# websockets, pydantic: ~0.4 s) is imported by the command that runs, so
# `rtc-peer --help` and `--version` start as fast as click does.
from rtc_signal.peers.defaults import DEFAULT_SIGNAL_URL
from rtc_signal.peers.errors import PeerError  # stdlib only
from rtc_signal.proto import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from rtc_signal.peers.codes import Code
    from rtc_signal.peers.media import MediaServer
    from rtc_signal.peers.media.viewer import WatchResult
    from rtc_signal.peers.reconnect import ReconnectPolicy
    from rtc_signal.peers.session import Call, PeerConfig

LOG_LEVELS = ["debug", "info", "warning", "error"]
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _apply(options: list[Decorator]) -> Decorator:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


_connection_options = _apply(
    [
        click.option(
            "--signal",
            "signal_url",
            default=DEFAULT_SIGNAL_URL,
            show_default=True,
            envvar="RTC_SIGNAL_URL",
            show_envvar=True,
            help="Signaling server URL (ws:// or wss://), without the path (a trailing "
            "/offer or /register is removed, with a warning).",
        ),
        click.option(
            "--token",
            envvar="RTC_PEER_TOKEN",
            show_envvar=True,
            help="Token for our ID, from `rtc-signal token` (for a server run with "
            "--secret); sent as an Authorization header. Offer peers default --id to "
            "the token's ID.",
        ),
        click.option(
            "--cafile",
            type=click.Path(exists=True, dir_okay=False),
            help="CA certificate(s) (PEM) that verify a wss:// signaling server; "
            "default: the system's.",
        ),
        click.option(
            "--ice-server",
            "ice_servers",
            multiple=True,
            metavar="URL",
            help="STUN/TURN server (stun:host:port, turn:host:port?transport=udp); "
            "repeatable. None by default: no public server is ever used.",
        ),
        click.option("--ice-username", help="Username for the TURN servers."),
        click.option("--ice-credential", help="Credential (password) for the TURN servers."),
        click.option(
            "--ice-transport-policy",
            type=click.Choice(["all", "relay"]),
            default="all",
            show_default=True,
            help="'relay' uses TURN candidates only.",
        ),
        click.option(
            "--host-address",
            "host_addresses",
            multiple=True,
            metavar="ADDR",
            help="Gather host candidates only on this IP address (repeatable; e.g. "
            "127.0.0.1, which is otherwise skipped). Default: every address but loopback.",
        ),
        click.option(
            "--connect-timeout",
            default=30.0,
            show_default=True,
            type=click.FloatRange(0, min_open=True),
            help="Seconds to wait for the data channel to open.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS),
            default="warning",
            show_default=True,
            help="Logging threshold (logs go to stderr).",
        ),
    ]
)

_data_options = _apply(
    [
        click.option(
            "--interval",
            default=5.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Seconds between timer messages.",
        ),
        click.option(
            "--count",
            type=click.IntRange(1),
            default=None,
            help="Timer: stop after N messages sent and N received, then exit 0.",
        ),
        click.option(
            "--stdin",
            "chat_mode",
            is_flag=True,
            help="Chat: send each line of stdin, print each message received as "
            "'ID: line'; end of stdin ends our side only, the call ends when both have.",
        ),
        click.option(
            "--pipe",
            "pipe_mode",
            is_flag=True,
            help="Pipe: raw bytes from stdin to the channel and from the channel to "
            "stdout (binary-safe, like netcat); end of stdin ends that direction only, "
            "the call ends when both have; a cut stream exits 1.",
        ),
    ]
)


_reconnect_options = _apply(
    [
        click.option(
            "--reconnect/--no-reconnect",
            default=True,
            show_default=True,
            help="Reconnect and register again when the signaling server goes away "
            "(calls in progress go on meanwhile); --no-reconnect exits once they end.",
        ),
        click.option(
            "--reconnect-delay",
            default=0.5,
            show_default=True,
            type=click.FloatRange(0, min_open=True),
            help="Upper bound of the first retry's random delay (seconds); it doubles "
            "with each failed attempt.",
        ),
        click.option(
            "--reconnect-max-delay",
            default=30.0,
            show_default=True,
            type=click.FloatRange(0, min_open=True),
            help="The retry delay's bound never exceeds this (seconds).",
        ),
    ]
)


def _path(value: str) -> Path:
    """A path option's value as a pathlib.Path. Not click's ``path_type=Path``:
    pathlib (~10 ms with what it imports) is loaded only when a path option is
    given, not for ``--help``."""
    from pathlib import Path

    return Path(value)


def _reconnect_policy(opts: dict[str, Any]) -> ReconnectPolicy | None:
    from rtc_signal.peers.reconnect import ReconnectPolicy

    if not opts["reconnect"]:
        return None
    try:
        return ReconnectPolicy(
            base_delay=opts["reconnect_delay"], max_delay=opts["reconnect_max_delay"]
        )
    except ValueError as exc:
        raise click.UsageError(f"--reconnect-delay/--reconnect-max-delay: {exc}") from None


_media_options = _apply(
    [
        click.option(
            "--video",
            metavar="SOURCE",
            help="Send video to every caller: a file (MPEG-TS/MP4/MKV), rtsp://..., "
            "v4l2:/dev/videoN or testsrc[:WxH[@FPS]]. H.264/VP8 pass through, not re-encoded.",
        ),
        click.option(
            "--audio",
            metavar="SOURCE",
            help="Send audio: a file, rtsp://..., alsa:DEV, pulse:DEV or testsrc (a tone). "
            "Opus passes through; other codecs are encoded to Opus per caller.",
        ),
        click.option(
            "--transcode",
            is_flag=True,
            help="Decode the sources and encode for each caller (any input codec; "
            "costs an encoder per caller).",
        ),
        click.option(
            "--stats",
            "stats_interval",
            is_flag=False,
            flag_value=5.0,
            default=None,
            type=click.FloatRange(0, min_open=True),
            metavar="[SECONDS]",
            help="Print sending stats to stderr every SECONDS (default 5).",
        ),
        click.option(
            "--stats-port",
            type=click.IntRange(0, 65535),
            default=None,
            help="Serve the stats as JSON at GET /stats on this port (0: any free one).",
        ),
        click.option(
            "--stats-host",
            default="127.0.0.1",
            show_default=True,
            help="Address for --stats-port.",
        ),
    ]
)


def _config(opts: dict[str, Any]) -> PeerConfig:
    from rtc_signal.peers.ice import IceSettings, check_host_addresses
    from rtc_signal.peers.session import PeerConfig
    from rtc_signal.peers.signaling_client import strip_endpoint

    try:
        ice = IceSettings(
            servers=tuple(opts["ice_servers"]),
            username=opts["ice_username"],
            credential=opts["ice_credential"],
            transport_policy=opts["ice_transport_policy"],
            host_addresses=tuple(opts["host_addresses"]) or None,
        )
    except PeerError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        check_host_addresses(ice.host_addresses or ())
    except PeerError as exc:
        raise click.BadParameter(str(exc), param_hint="--host-address") from None
    signal_url, endpoint = strip_endpoint(opts["signal_url"])
    if endpoint is not None:
        click.echo(
            f"rtc-peer: warning: --signal takes the server's URL without {endpoint} "
            f"(rtc-peer adds /offer and /register itself): using {signal_url}",
            err=True,
        )
    return PeerConfig(
        signal_url=signal_url,
        ice=ice,
        connect_timeout=opts["connect_timeout"],
        token=opts["token"] or None,
        cafile=opts["cafile"],
    )


def _own_id(peer_id: str | None, opts: dict[str, Any]) -> str:
    """An offer-side peer's ID: --id, else its token's ID, else a random one."""
    from rtc_signal.peers.session import new_offer_id
    from rtc_signal.proto.tokens import TokenError, peek_id

    if peer_id:
        return peer_id
    if opts["token"]:
        try:
            return peek_id(opts["token"])
        except TokenError as exc:
            raise click.BadParameter(str(exc), param_hint="--token") from None
    return new_offer_id()


def _run(main: Coroutine[Any, Any, None], log_level: str) -> None:
    import logging
    import signal

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _event_loop_runner()(_terminable(main))
    except Terminated:
        sys.exit(128 + signal.SIGTERM)
    except PeerError as exc:
        _fail(exc)
    except BaseExceptionGroup as group:  # raised through a TaskGroup
        expected = group.subgroup(PeerError)
        if expected is None:
            raise
        _fail(_first_leaf(expected))
    except KeyboardInterrupt:
        sys.exit(130)


class Terminated(Exception):
    """SIGTERM ended the command (after a clean shutdown)."""


async def _terminable(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; SIGTERM cancels it like Ctrl-C does, so that connections
    close cleanly: the signaling server then frees an answer peer's ID at once
    instead of holding it for a reconnect (a service manager restarting
    `rtc-peer answer` would otherwise get 409 for the grace period)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError):  # no signal support (Windows)
        await main
        return
    try:
        await main
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's runner when it is installed (aiortc's per-packet work runs
    faster on it), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    return runner


def _first_leaf(group: BaseExceptionGroup[PeerError]) -> PeerError:
    first = group.exceptions[0]
    return first if isinstance(first, PeerError) else _first_leaf(first)  # nested group


def _fail(exc: PeerError) -> None:
    """One clear line on stderr and the error's exit status."""
    click.echo(f"rtc-peer: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _echo(line: str) -> None:
    click.echo(line)


def _status(line: str) -> None:
    """A status line: on stderr, so that stdout carries only data."""
    click.echo(line, err=True)


def _data_mode(opts: dict[str, Any]) -> str:
    if opts["chat_mode"] and opts["pipe_mode"]:
        raise click.UsageError("--stdin and --pipe cannot be used together")
    if (opts["chat_mode"] or opts["pipe_mode"]) and opts["count"]:
        raise click.UsageError("--count is for the timer; --stdin/--pipe end with stdin")
    return "chat" if opts["chat_mode"] else "pipe" if opts["pipe_mode"] else "timer"


async def _run_data(c: Call, mode: str, prefix: str, opts: dict[str, Any]) -> None:
    """Run the data-channel workload chosen on the command line."""
    from rtc_signal.peers.stream import StreamEnds, chat, pipe
    from rtc_signal.peers.workloads import timer

    if mode == "timer":
        await timer(c.channel, prefix, opts["interval"], opts["count"], _echo)
        return
    ends = (
        StreamEnds.for_offer()
        if prefix == "offer"
        else StreamEnds.for_answer(str(c.channel.dc.protocol))
    )
    if mode == "chat":
        _status(f"rtc-peer: connected to {c.remote_id}")
        await chat(
            c.channel,
            sys.stdin.buffer,
            lambda text: _echo(f"{c.remote_id}: {text}"),
            ends,
            repr(c.remote_id),
            lambda: _status(f"rtc-peer: {c.remote_id} left"),
        )
    else:
        await pipe(c.channel, sys.stdin.buffer, sys.stdout.buffer, ends, repr(c.remote_id))


@click.group()
@click.version_option(version=__version__)
def main() -> None:
    """rtc-peer: WebRTC data-channel peers (aiortc) using rtc-signal signaling."""


_verify_option = click.option(
    "--verify",
    is_flag=True,
    help="Print a short authentication string (5 words, from both DTLS fingerprints) "
    "on stderr once connected: if both sides read the same words, nobody is in the middle.",
)


def _show_sas(c: Call) -> None:
    _status(f"rtc-peer: verify with {c.remote_id!r}: {c.short_auth_string()}")


def _code_status(code: object, offer_command: str) -> None:
    _status(f"rtc-peer: code {code} (one use); on the other side: rtc-peer {offer_command} {code}")


def _parse_code_option(text: str, param_hint: str) -> Code:
    from rtc_signal.peers.codes import CodeError, parse_code

    try:
        return parse_code(text)
    except CodeError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


@main.command()
@click.option("--id", "peer_id", default=None, help="The ID to register and be called by.")
@click.option(
    "--code",
    "use_code",
    is_flag=True,
    help="Instead of --id: register under a fresh one-time code, print it and answer "
    "the one caller who has it (`rtc-peer offer --code CODE`); both DTLS fingerprints "
    "are authenticated with it end to end.",
)
@_verify_option
@_data_options
@click.option(
    "--accept-files",
    "accept_files_option",
    type=click.Path(file_okay=False),
    default=None,
    help="Accept files sent with `rtc-peer send` into this directory (off by default).",
)
@click.option("--overwrite", is_flag=True, help="With --accept-files: replace existing files.")
@_media_options
@_reconnect_options
@_connection_options
def answer(
    peer_id: str | None,
    use_code: bool,
    verify: bool,
    accept_files_option: str | None,
    overwrite: bool,
    **opts: Any,
) -> None:
    """Register as ID and answer every caller (until interrupted; one call with
    --count, --stdin or --pipe). With --video/--audio, every caller that asks
    for media gets the tracks, with or without a data channel. With --code,
    answer one caller that knows the printed one-time code."""
    from rtc_signal.peers.bench import BENCH_LABEL, serve_bench
    from rtc_signal.peers.file_receiver import receive_files, refuse_files
    from rtc_signal.peers.files import FILES_LABEL, FileTransferError
    from rtc_signal.peers.media import MediaServer, serve_media
    from rtc_signal.peers.session import AnswerPeer
    from rtc_signal.proto.control import CONTROL_LABEL

    if (peer_id is None) == (not use_code):
        raise click.UsageError("give either --id ID or --code")
    config = _config(opts)
    reconnect = _reconnect_policy(opts)
    mode = _data_mode(opts)
    media = _media_server(opts)
    if use_code and media is not None:
        raise click.UsageError("--code is for data calls, not --video/--audio")
    accept_files = None if accept_files_option is None else _path(accept_files_option)
    if accept_files is not None and not accept_files.is_dir():
        raise click.UsageError(f"--accept-files: {accept_files} is not a directory")
    progress = sys.stderr.isatty()
    control = media or MediaServer(None, None)  # control commands without media too

    one_call = opts["count"] is not None or mode != "timer"

    async def on_call(c: Call) -> None:
        if verify:
            _show_sas(c)
        label = c.channel.label
        if label == CONTROL_LABEL:
            await control.serve_control(c.channel, c.remote_id)
        elif label == BENCH_LABEL:
            await serve_bench(c.channel)
        elif label == FILES_LABEL:
            if accept_files is None:
                await refuse_files(c.channel, "this peer does not accept files (--accept-files)")
            else:
                try:
                    await receive_files(c.channel, accept_files, overwrite, progress, _status)
                except FileTransferError:
                    # Each refusal has had its one status line already; raised
                    # on, the session would log the first one a second time.
                    # The answer peer goes on serving (or, serving one call,
                    # exits with it: a failed transfer is never a success).
                    if one_call:
                        raise
        else:
            await _run_data(c, mode, "answer", opts)

    registrations = 0

    def on_registered(url: str) -> None:
        nonlocal registrations
        registrations += 1
        again = "" if registrations == 1 else "again "
        _status(f"rtc-peer: registered {again}as {peer_id!r} on {url}, waiting for callers")

    def on_reconnect_status(line: str) -> None:
        _status(f"rtc-peer: {line}")

    async def serve() -> None:
        if use_code:
            from rtc_signal.peers.codecall import serve_code

            await serve_code(config, on_call, lambda code: _code_status(code, "offer --code"))
            return
        assert peer_id is not None
        if media is None:
            peer = AnswerPeer(config, peer_id, on_registered, reconnect, on_reconnect_status)
            await peer.serve(on_call, max_calls=1 if one_call else None)
            return
        await media.start()
        _status(f"rtc-peer: sending {media.describe()}")
        peer = AnswerPeer(
            config, peer_id, on_registered, reconnect, on_reconnect_status, media=media
        )
        await serve_media(
            media,
            peer.serve(on_call, max_calls=1 if one_call else None),
            _status,
            opts["stats_interval"],
            opts["stats_port"],
            opts["stats_host"],
        )

    _run(serve(), opts["log_level"])


def _media_server(opts: dict[str, Any]) -> MediaServer | None:
    """The --video/--audio sources (parsed now: a bad SOURCE is a usage error)."""
    from rtc_signal.peers.media import MediaServer, parse_source

    if opts["video"] is None and opts["audio"] is None:
        for name in ("transcode", "stats_interval", "stats_port"):
            if opts[name] is not None and opts[name] is not False:  # port 0 counts
                flag = "--" + name.replace("_interval", "").replace("_", "-")
                raise click.UsageError(f"{flag} needs --video or --audio")
        return None
    try:
        video = parse_source(opts["video"], "video") if opts["video"] else None
        audio = parse_source(opts["audio"], "audio") if opts["audio"] else None
    except PeerError as exc:
        raise click.UsageError(str(exc)) from None
    # from the reader thread: a line on stderr for each reconnect step
    return MediaServer(video, audio, opts["transcode"], lambda line: _status(f"rtc-peer: {line}"))


@main.command()
@click.option("--target", default=None, help="The answer peer's ID to call.")
@click.option(
    "--code",
    "code_text",
    default=None,
    metavar="CODE",
    help="Instead of --target: call whoever printed this one-time code "
    "(`rtc-peer answer --code`), authenticating both DTLS fingerprints with it.",
)
@click.option("--id", "peer_id", default=None, help="Our own ID (default: offer-<random>).")
@_verify_option
@_data_options
@click.option(
    "--record",
    "record_option",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Receive TARGET's video/audio and write it to this file (.mp4, .mkv, .ts), "
    "remuxed, not re-encoded.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Receive media for this many seconds, then exit (default: until interrupted); "
    "with --record, the file's length, counted from its first keyframe.",
)
@click.option(
    "--control",
    "controls",
    multiple=True,
    metavar="CMD",
    help="Send a control command (ping, stats, keyframe, pause, resume, or a JSON "
    "request) on the `control` channel and print the reply (JSON line); repeatable.",
)
@_connection_options
def offer(
    target: str | None,
    code_text: str | None,
    peer_id: str | None,
    verify: bool,
    record_option: str | None,
    duration: float | None,
    controls: tuple[str, ...],
    **opts: Any,
) -> None:
    """Call the answer peer TARGET: timer messages, chat (--stdin) or pipe
    (--pipe); or, with --record/--duration/--control, watch its media."""
    from rtc_signal.peers.session import call, new_offer_id

    if (target is None) == (code_text is None):
        raise click.UsageError("give either --target ID or --code CODE")
    code = None if code_text is None else _parse_code_option(code_text, "--code")
    config = _config(opts)
    mode = _data_mode(opts)
    record = None if record_option is None else _path(record_option)
    if record is not None or duration is not None or controls:
        if code is not None:
            raise click.UsageError("--code is for data calls, not --record/--duration/--control")
        assert target is not None
        if mode != "timer" or opts["count"] is not None:
            raise click.UsageError("--record/--duration/--control watch media: no data workload")

        from rtc_signal.peers.media import watch

        async def run_watch() -> None:
            result = await watch(
                config, target, peer_id or new_offer_id(), record, duration, list(controls), _echo
            )
            _status(_watch_summary(result, record))

        _run(run_watch(), opts["log_level"])
        return

    async def run() -> None:
        from rtc_signal.peers.stream import STREAM_PROTOCOL

        # chat and pipe announce their end-of-stream handshake; the timer
        # keeps the Go demo's plain channel
        protocol = "" if mode == "timer" else STREAM_PROTOCOL
        ident = _own_id(peer_id, opts)
        async with call(config, target or "", ident, protocol=protocol, code=code) as c:
            if verify:
                _show_sas(c)
            await _run_data(c, mode, "offer", opts)

    _run(run(), opts["log_level"])


def _watch_summary(result: WatchResult, record: Path | None) -> str:
    received = ", ".join(f"{n} {kind} frames" for kind, n in result.frames.items()) or "nothing"
    line = f"rtc-peer: received {received} in {result.seconds:.1f} s"
    if record is not None:
        what = ", ".join(f"{n} {kind}" for kind, n in result.recorded.items() if n) or "nothing"
        size = f" {result.size[0]}x{result.size[1]}" if result.size else ""
        line += f"; recorded {what} ({result.codec or 'no video'}{size}) to {record}"
    return line


@main.command()
@click.argument(
    "file_options",
    metavar="FILES...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True),
)
@click.option(
    "--target",
    default=None,
    help="The answer peer (run with --accept-files). Without it: register under a "
    "fresh one-time code, print it and send to whoever runs `rtc-peer receive CODE`.",
)
@click.option("--id", "peer_id", default=None, help="Our own ID (default: offer-<random>).")
@_connection_options
def send(
    file_options: tuple[str, ...], target: str | None, peer_id: str | None, **opts: Any
) -> None:
    """Send FILES to the answer peer TARGET, or to the holder of a printed
    one-time code (name, size and SHA-256 checked)."""
    from rtc_signal.peers.files import FILES_LABEL, send_files
    from rtc_signal.peers.session import call

    config = _config(opts)
    progress = sys.stderr.isatty()
    paths = [_path(f) for f in file_options]

    async def run() -> None:
        assert target is not None
        async with call(config, target, _own_id(peer_id, opts), FILES_LABEL) as c:
            await send_files(c.channel, paths, progress, _status)

    async def send_by_code() -> None:
        from rtc_signal.peers.codecall import serve_code

        async def on_call(c: Call) -> None:
            if c.channel.label != FILES_LABEL:
                raise PeerError(f"the caller asked for {c.channel.label!r}, not files")
            await send_files(c.channel, paths, progress, _status)

        await serve_code(config, on_call, lambda code: _code_status(code, "receive"))

    if peer_id is not None and target is None:
        raise click.UsageError("--id is for --target calls (a code's owner is code-<number>)")
    _run(run() if target is not None else send_by_code(), opts["log_level"])


@main.command()
@click.argument("code_text", metavar="CODE")
@click.option(
    "--dir",
    "directory_option",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, exists=True),
    help="Store the files here.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
@click.option("--id", "peer_id", default=None, help="Our own ID (default: offer-<random>).")
@_connection_options
def receive(
    code_text: str, directory_option: str, overwrite: bool, peer_id: str | None, **opts: Any
) -> None:
    """Receive the files of `rtc-peer send FILE...` that printed CODE (each
    stored only once its size and SHA-256 match)."""
    from rtc_signal.peers.file_receiver import receive_files
    from rtc_signal.peers.files import FILES_LABEL
    from rtc_signal.peers.session import call

    code = _parse_code_option(code_text, "CODE")
    config = _config(opts)
    progress = sys.stderr.isatty()
    directory = _path(directory_option)

    async def run() -> None:
        async with call(config, "", _own_id(peer_id, opts), FILES_LABEL, code=code) as c:
            stats = await receive_files(c.channel, directory, overwrite, progress, _status)
        if not stats:
            raise PeerError("the sender closed the call without sending a file")

    _run(run(), opts["log_level"])


@main.command()
@click.option("--target", required=True, help="Any `rtc-peer answer` peer's ID.")
@click.option("--id", "peer_id", default=None, help="Our own ID (default: offer-<random>).")
@click.option(
    "--seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="How long to measure throughput.",
)
@click.option(
    "--size",
    default=65536,
    show_default=True,
    type=click.IntRange(1),
    help="Message size in bytes for the throughput test.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_connection_options
def bench(
    target: str, peer_id: str | None, seconds: float, size: int, as_json: bool, **opts: Any
) -> None:
    """Measure setup time, throughput and RTT against the answer peer TARGET."""
    from rtc_signal.peers.bench import BENCH_LABEL, run_bench
    from rtc_signal.peers.session import call

    config = _config(opts)

    import json

    async def run() -> None:
        async with call(config, target, _own_id(peer_id, opts), BENCH_LABEL) as c:
            result = await run_bench(c, seconds, size)
        if as_json:
            click.echo(json.dumps(result.as_json()))
        else:
            click.echo(result.table())

    _run(run(), opts["log_level"])


@main.command()
@click.option("--room", required=True, help="The room to join (1-64 of A-Z a-z 0-9 . _ -).")
@click.option(
    "--id",
    "peer_id",
    default=None,
    help="Our member ID in the room (default: the token's ID, else m-<random>).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0),
    default=None,
    help="Timer instead of chat: send <id>-1, <id>-2, ... to each member every "
    "INTERVAL seconds (a sequence per member, from when it connects).",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Timer: exit 0 once N messages went both ways with every member present "
    "(and with at least --expect members). Default interval 1 s.",
)
@click.option(
    "--expect",
    type=click.IntRange(0),
    default=None,
    help="With --count: members to finish with at least (default 1), so a member "
    "alone in the room waits for others.",
)
@_connection_options
def join(
    room: str,
    peer_id: str | None,
    interval: float | None,
    count: int | None,
    expect: int | None,
    **opts: Any,
) -> None:
    """Join ROOM: a group chat over a mesh of peer connections, one per member.

    Lines typed go to every member; messages received are printed as
    `<sender>: <text>`; members joining and leaving are reported on stderr.
    End of input leaves the room. With --interval/--count: the timer instead.
    """
    from rtc_signal.peers.room import check_member_id, check_room_name, join, new_member_id
    from rtc_signal.peers.roomwork import room_chat, room_timer

    if expect is not None and count is None:
        raise click.UsageError("--expect goes with --count")
    try:
        check_room_name(room)
        if peer_id is not None:
            check_member_id(peer_id)
    except PeerError as exc:
        raise click.UsageError(str(exc)) from None
    config = _config(opts)
    member_id = peer_id or (_own_id(None, opts) if opts["token"] else new_member_id())

    async def run() -> None:
        async with join(config, room, member_id) as the_room:
            members = ", ".join(the_room.members) or "nobody else yet"
            _status(f"rtc-peer: joined {room} as {member_id!r}; members: {members}")
            if interval is None and count is None:
                await room_chat(the_room, sys.stdin.buffer, _echo, _status)
            else:
                await room_timer(
                    the_room,
                    1.0 if interval is None else interval,
                    count,
                    1 if expect is None else expect,
                    _echo,
                    _status,
                )

    _run(run(), opts["log_level"])


if __name__ == "__main__":
    main()
