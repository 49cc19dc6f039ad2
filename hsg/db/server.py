"""A real Neo4j Community server with Graph Data Science and Browser, without Docker.

The jars come from Maven Central through `docker/server/pom.xml` and are laid out as a
normal Neo4j home:

    <home>/lib        Neo4j, Browser and their dependencies (JVM classpath)
    <home>/plugins    the Graph Data Science jars (procedures scanned from here)
    <home>/conf       neo4j.conf, generated; the generated password (mode 0600)
    <home>/data       databases; survives stop/start
    <home>/logs       neo4j.log, debug.log, console.log
    <home>/run        neo4j.pid

The home is private to its user: folders 0700, files 0600 (the store, the transaction logs
and `data/dbms/auth.ini` included), because the installer, the admin tool and the server
all run with umask 077, and `start` takes group and world access away from whatever an
older version or another tool left there.

The GDS Maven artifacts are not shaded, so they cannot simply be dropped into `plugins/`:
their extension (`opengds-extension`) registers itself through the JVM's service loader,
which only sees the application classpath. We therefore put `plugins/*` on the classpath
too, and keep every third-party jar in `lib/` only, so no class exists twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hsg.db.errors import DatabaseError
from hsg.db.settings import (
    DEFAULT_BOLT_PORT,
    DEFAULT_USER,
    LOCAL_HOST,
    PASSWORD_FILE,
    env_bolt_port,
    password_path,
)
from hsg.paths import default_home, server_build_dir

ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
ADMIN_TOOL = "org.neo4j.cli.AdminTool"
GDS_GROUP_PREFIX = "org.neo4j.gds."
SUPPORTED_JAVA = (17, 21)
MANIFEST = "hsg-server.json"
# Files and folders created by the installer, the admin tool and the server: owner only.
PRIVATE_UMASK = 0o077
# Where distributions install JDKs side by side; searched after JAVA_HOME and PATH.
JVM_ROOTS = (Path("/usr/lib/jvm"),)

# JVM options Neo4j's own launcher passes on Java 17+; without the opens, Netty and the
# page cache fall back to slow paths or fail.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:+DebugNonSafepoints",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
)


# "512m", "1G", "300000k": what Neo4j reads as a byte size.
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)[iI]?[bB]?\s*$")
# Transaction logs kept beyond the newest file, by size: a bulk ingest writes ~45 kB of log
# per window, so Neo4j's default of two days kept GBs that nothing here ever reads back
# (no backups, no cluster). Recovery needs only the logs since the last checkpoint.
DEFAULT_TX_LOG_RETENTION = "256m"
# Rotated files are what pruning removes, whole; smaller files let it keep closer to the
# limit than Neo4j's 256 MiB default would.
TX_LOG_ROTATION_SIZE = "64m"
# Pruning runs after a checkpoint; Community checkpoints every 15 min or 100k transactions
# by default, which a bulk ingest (a few hundred large transactions) reaches only by time.
CHECKPOINT_INTERVAL = "5m"


def check_size(value: str, what: str) -> str:
    """`value` normalised as Neo4j's byte size (`512m` → `512M`); else a DatabaseError."""
    match = _SIZE.match(str(value))
    if not match or int(match.group(1)) <= 0:
        raise DatabaseError(
            f"bad {what} {value!r}: expected a positive size such as 256m, 512M or 2g"
        )
    return f"{int(match.group(1))}{match.group(2).upper()}"


@dataclass
class ServerConfig:
    """Everything that decides how the local server is laid out and started."""

    home: Path = field(default_factory=default_home)
    bolt_port: int = DEFAULT_BOLT_PORT
    http_port: int = 7474
    listen_address: str = LOCAL_HOST
    heap: str = "1g"
    pagecache: str = "512m"
    java_home: Path | None = None
    tx_log_retention: str = DEFAULT_TX_LOG_RETENTION

    @classmethod
    def from_env(cls, **overrides: object) -> ServerConfig:
        env = os.environ
        cfg = cls()
        cfg.bolt_port = env_bolt_port() or cfg.bolt_port
        if env.get("HSG_HTTP_PORT"):
            cfg.http_port = int(env["HSG_HTTP_PORT"])
        if env.get("HSG_HEAP"):
            cfg.heap = env["HSG_HEAP"]
        if env.get("HSG_PAGECACHE"):
            cfg.pagecache = env["HSG_PAGECACHE"]
        if env.get("HSG_JAVA_HOME"):
            cfg.java_home = Path(env["HSG_JAVA_HOME"])
        if env.get("HSG_TX_LOG_RETENTION"):
            cfg.tx_log_retention = env["HSG_TX_LOG_RETENTION"]
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, Path(value) if key in ("home", "java_home") else value)
        cfg.home = Path(cfg.home).expanduser().resolve()
        cfg.tx_log_retention = check_size(cfg.tx_log_retention, "transaction log retention")
        return cfg

    @property
    def bolt_uri(self) -> str:
        return f"bolt://{self.listen_address}:{self.bolt_port}"

    @property
    def browser_url(self) -> str:
        return f"http://{self.listen_address}:{self.http_port}/browser/"


# ---------------------------------------------------------------------------- java


def find_java(cfg: ServerConfig) -> tuple[Path, int]:
    """A Java that Neo4j 5.26 supports (17 or 21), or a message saying how to get one."""
    candidates: list[Path] = []
    for home in (cfg.java_home, os.environ.get("JAVA_HOME")):
        if home:
            candidates.append(Path(home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    for jvm_root in JVM_ROOTS:
        if jvm_root.is_dir():
            candidates.extend(sorted(jvm_root.glob("*/bin/java")))
    seen: list[str] = []
    for java in candidates:
        if not java.exists():
            continue
        major = java_major_version(java)
        seen.append(f"{java} (Java {major})")
        if major in SUPPORTED_JAVA:
            return java, major
    if not seen:
        raise DatabaseError(
            "Java is missing: Neo4j 5.26 needs Java 17 or 21. Install it (Debian: "
            "`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME / HSG_JAVA_HOME."
        )
    raise DatabaseError(
        "no supported Java found: Neo4j 5.26 needs Java 17 or 21; found "
        + ", ".join(seen)
        + ". Set HSG_JAVA_HOME to a Java 17 installation."
    )


def java_major_version(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


# ------------------------------------------------------------------------- install


def _pom_path() -> Path:
    return server_build_dir() / "pom.xml"


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def read_manifest(home: Path) -> dict | None:
    try:
        return json.loads((home / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_installed(cfg: ServerConfig) -> bool:
    manifest = read_manifest(cfg.home)
    pom = _pom_path()
    return bool(manifest) and pom.exists() and manifest.get("pom_sha256") == _pom_digest(pom)


def install(cfg: ServerConfig, force: bool = False, log=print) -> dict:
    """Resolve the jars with Maven and lay them out; a no-op when already done for this pom.

    Maven's own cache (~/.m2) makes a second install fast; nothing depends on it existing.
    """
    pom = _pom_path()
    if not pom.exists():
        raise DatabaseError(f"server build file missing: {pom}")
    if is_installed(cfg) and not force:
        return read_manifest(cfg.home) or {}
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DatabaseError(
            "Maven (`mvn`) is needed once to fetch Neo4j and GDS from Maven Central; "
            "install it (Debian: `apt-get install maven`) or use docker/compose.yaml."
        )
    java, _ = find_java(cfg)
    private_dir(cfg.home)
    stage = cfg.home / ".stage"
    shutil.rmtree(stage, ignore_errors=True)
    private_dir(stage)
    # Maven runs on a copy: the packaged pom may sit in a read-only site-packages
    build = cfg.home / ".build"
    shutil.rmtree(build, ignore_errors=True)
    private_dir(build)
    write_private(build / "pom.xml", pom.read_bytes())
    env = dict(os.environ, JAVA_HOME=str(java.parent.parent))
    log(f"resolving Neo4j, Browser and GDS from Maven Central ({pom}) …")
    proc = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(build / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={stage}",
            "-Dmdep.prependGroupId=true",
        ],
        capture_output=True,
        text=True,
        env=env,
        umask=PRIVATE_UMASK,
    )
    if proc.returncode != 0:
        raise DatabaseError(
            "Maven could not resolve the server jars:\n" + (proc.stdout + proc.stderr)[-3000:]
        )
    lib, plugins = cfg.home / "lib", cfg.home / "plugins"
    for folder in (lib, plugins):
        shutil.rmtree(folder, ignore_errors=True)
        private_dir(folder)
    for name in ("conf", "data", "logs", "run"):
        private_dir(cfg.home / name)
    jars = sorted(stage.glob("*.jar"))
    for jar in jars:
        target = plugins if jar.name.startswith(GDS_GROUP_PREFIX) else lib
        jar.rename(target / jar.name)
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(build, ignore_errors=True)
    manifest = {
        "pom_sha256": _pom_digest(pom),
        "neo4j": _version_of(lib, "org.neo4j.neo4j-"),
        "gds": _version_of(plugins, "org.neo4j.gds.proc-"),
        "browser": _version_of(lib, "org.neo4j.client.neo4j-browser-"),
        "lib_jars": len(list(lib.glob("*.jar"))),
        "plugin_jars": len(list(plugins.glob("*.jar"))),
    }
    write_private(cfg.home / MANIFEST, json.dumps(manifest, indent=2))
    make_private(cfg.home)  # jars keep Maven's modes through the rename
    log(
        f"installed Neo4j {manifest['neo4j']} + GDS {manifest['gds']} + Browser "
        f"{manifest['browser']} in {cfg.home}"
    )
    return manifest


def _version_of(folder: Path, prefix: str) -> str | None:
    pattern = re.compile(re.escape(prefix) + r"(\d[\w.\-]*)\.jar$")
    for jar in folder.glob(prefix + "*.jar"):
        match = pattern.match(jar.name)
        if match:
            return match.group(1)
    return None


# -------------------------------------------------------------------- conf, password


def write_conf(cfg: ServerConfig) -> Path:
    """neo4j.conf is generated from ServerConfig on every start, so options always apply."""
    conf = cfg.home / "conf" / "neo4j.conf"
    private_dir(conf.parent)
    lines = [
        "# Generated by `hsg db start` from its options; edits are overwritten.",
        f"server.default_listen_address={cfg.listen_address}",
        f"server.default_advertised_address={cfg.listen_address}",
        f"server.bolt.listen_address=:{cfg.bolt_port}",
        f"server.http.listen_address=:{cfg.http_port}",
        "server.https.enabled=false",
        "dbms.security.auth_enabled=true",
        "dbms.security.procedures.unrestricted=gds.*",
        "dbms.security.procedures.allowlist=gds.*",
        "dbms.usage_report.enabled=false",
        f"server.memory.pagecache.size={cfg.pagecache}",
        # keep the transaction logs small during bulk ingest (see DEFAULT_TX_LOG_RETENTION)
        f"db.tx_log.rotation.retention_policy={check_size(cfg.tx_log_retention, 'retention')} size",
        f"db.tx_log.rotation.size={TX_LOG_ROTATION_SIZE.upper()}",
        f"db.checkpoint.interval.time={CHECKPOINT_INTERVAL}",
        "server.directories.plugins=plugins",
        "server.directories.run=run",
    ]
    write_private(conf, "\n".join(lines) + "\n")
    return conf


def ensure_password(cfg: ServerConfig, java: Path, log=print) -> tuple[str, bool]:
    """Set the initial password before the first start: NEO4J_PASSWORD, else a generated one.

    Returns the password and whether it is known to be the server's. The password is kept
    in <home>/conf/hsg-password (mode 0600) so that every later `hsg` command finds it.
    Neo4j only accepts an initial password before its system database exists; afterwards
    the stored one is authoritative. When that file is gone, NEO4J_PASSWORD is returned
    unchecked (False): `start` tries it on the running server before writing the file.
    """
    path = password_path(cfg.home)
    system_exists = (cfg.home / "data" / "databases" / "system").exists()
    wanted = os.environ.get("NEO4J_PASSWORD")
    if path.exists():
        stored = path.read_text().strip()
        if wanted and wanted != stored and system_exists:
            log(
                "warning: NEO4J_PASSWORD differs from the password this server was initialised "
                f"with ({path}); connections will use NEO4J_PASSWORD and may be refused."
            )
        return stored, True
    if system_exists:
        if wanted:
            return wanted, False
        raise DatabaseError(
            f"the server in {cfg.home} was initialised already, but its password file {path} "
            "is gone: set NEO4J_PASSWORD to its password."
        )
    password = wanted or secrets.token_urlsafe(18)
    if len(password) < 8:
        raise DatabaseError("NEO4J_PASSWORD must have at least 8 characters (Neo4j's minimum)")
    if "\n" in password or "\r" in password:
        raise DatabaseError("NEO4J_PASSWORD must be one line: hsg keeps it in a one-line file")
    set_initial_password(cfg, java, password)
    _write_secret(path, password)
    if not wanted:
        log(f"generated a Neo4j password, kept in {path} (readable only by you)")
    return password, True


def set_initial_password(cfg: ServerConfig, java: Path, password: str) -> None:
    """`neo4j-admin dbms set-initial-password`, with the password kept off the command line.

    Every process's command line is readable by all users (/proc/<pid>/cmdline), so the
    password goes into an argument file that only the user can read, which the admin tool
    expands (`@file`, Neo4j's documented way to pass admin arguments in a file; picocli's
    format: a double-quoted argument with `\\` and `"` escaped by a backslash).
    """
    conf = cfg.home / "conf"
    private_dir(conf)
    fd, argfile = tempfile.mkstemp(prefix=".initial-password-", dir=conf)  # mode 0600
    try:
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f'"{quoted}"\n')
        proc = subprocess.run(
            [
                str(java),
                "-Dfile.encoding=UTF-8",  # how the admin tool reads the argument file
                "-cp",
                str(cfg.home / "lib" / "*"),
                ADMIN_TOOL,
                "dbms",
                "set-initial-password",
                f"@{argfile}",
            ],
            capture_output=True,
            text=True,
            env=_neo4j_env(cfg, java),
            umask=PRIVATE_UMASK,
        )
    finally:
        Path(argfile).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise DatabaseError("could not set the initial password:\n" + proc.stderr[-2000:])


def _check_password(cfg: ServerConfig, password: str) -> None:
    """Raise unless the running server accepts `password` for the initial user."""
    from hsg.db.connection import password_accepted

    if not password_accepted(cfg.bolt_uri, DEFAULT_USER, password):
        raise DatabaseError(
            f"NEO4J_PASSWORD is not the password of the server in {cfg.home}: Neo4j refused "
            f"it for user {DEFAULT_USER!r}. The password file {password_path(cfg.home)} is "
            "gone, so set NEO4J_PASSWORD to the password the server was initialised with. "
            "Nothing was written, and the server was stopped again."
        )


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created with its parents if missing)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, content: str | bytes) -> None:
    """Write `content` to `path`, readable and writable by the owner only (0600), in a
    folder that only the owner can enter."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode("utf-8") if isinstance(content, str) else content)
    os.chmod(path, 0o600)


def _write_secret(path: Path, text: str) -> None:
    write_private(path, text + "\n")


def make_private(home: Path) -> None:
    """Take group and world access away from the home and everything in it.

    Symbolic links are left alone (their modes mean nothing, and their targets are not the
    home's); files keep their owner bits, so an executable stays executable.
    """
    paths = [home]
    for root, dirs, files in os.walk(home):
        paths.extend(Path(root, name) for name in (*dirs, *files))
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        private = 0o700 if stat.S_ISDIR(st.st_mode) else mode & 0o700
        if mode != private:
            os.chmod(path, private)


def _neo4j_env(cfg: ServerConfig, java: Path) -> dict[str, str]:
    # NEO4J_PASSWORD is hsg's variable; the server and the admin tool need not hold it
    inherited = {k: v for k, v in os.environ.items() if k != "NEO4J_PASSWORD"}
    return dict(
        inherited,
        NEO4J_HOME=str(cfg.home),
        NEO4J_CONF=str(cfg.home / "conf"),
        JAVA_HOME=str(java.parent.parent),
    )


# ------------------------------------------------------------------ process control


def pid_file(cfg: ServerConfig) -> Path:
    return cfg.home / "run" / "neo4j.pid"


def _pid_in_file(cfg: ServerConfig) -> int | None:
    try:
        return int(pid_file(cfg).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(cfg: ServerConfig) -> int | None:
    """The server's pid if its pid file names a live Neo4j server of this very home.

    A pid file alone proves nothing: a copied home carries the original's, and a pid is
    reused once its process is gone. The process must be Neo4j started with this home.
    """
    pid = _pid_in_file(cfg)
    if pid is None or not pid_alive(pid):
        return None
    return pid if _serves_home(pid, cfg.home) else None


def _serves_home(pid: int, home: Path) -> bool:
    """Whether process `pid` is a Neo4j server that `start` launched for `home`."""
    home_arg = f"--home-dir={Path(home).resolve()}"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        return ENTRY_POINT in args and home_arg in args
    except OSError:
        pass
    try:  # no /proc (macOS): ps prints the arguments joined by spaces
        out = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    line = f" {out.strip()} "
    return f" {ENTRY_POINT} " in line and f" {home_arg} " in line


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    try:
        # the state follows the command name, which is in parentheses and may hold spaces
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def start(cfg: ServerConfig, timeout: float = 180.0, log=print) -> int:
    """Start the server in the background and wait until Bolt answers; returns the pid."""
    pid = running_pid(cfg)
    if pid is not None:
        log(f"Neo4j already running (pid {pid}) from {cfg.home}")
        return pid
    java, major = find_java(cfg)
    for name, port in (("Bolt", cfg.bolt_port), ("HTTP", cfg.http_port)):
        if port_in_use(cfg.listen_address, port):
            raise DatabaseError(
                f"{name} port {port} on {cfg.listen_address} is already in use by another "
                f"program. Stop it, or choose another port: `hsg db start --{name.lower()}-port "
                "N` (and set NEO4J_URI accordingly)."
            )
    install(cfg, log=log)
    make_private(cfg.home)  # homes laid out before hsg kept them private
    write_conf(cfg)
    password, password_known = ensure_password(cfg, java, log=log)
    logs = private_dir(cfg.home / "logs")
    private_dir(cfg.home / "run")
    classpath = f"{cfg.home / 'lib' / '*'}:{cfg.home / 'plugins' / '*'}"
    cmd = [
        str(java),
        f"-Xms{cfg.heap}",
        f"-Xmx{cfg.heap}",
        *JVM_OPTIONS,
        "-cp",
        classpath,
        ENTRY_POINT,
        f"--home-dir={cfg.home.resolve()}",  # what running_pid recognises the server by
        f"--config-dir={cfg.home / 'conf'}",
    ]
    console = os.open(logs / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = subprocess.Popen(
        cmd,
        stdout=console,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cfg.home,
        env=_neo4j_env(cfg, java),
        start_new_session=True,  # survives the CLI process and its terminal
        umask=PRIVATE_UMASK,  # the store, its logs and auth files: owner only
    )
    os.close(console)  # the child holds its own copy
    write_private(pid_file(cfg), str(proc.pid))
    log(f"starting Neo4j (Java {major}, pid {proc.pid}, heap {cfg.heap}) …")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file(cfg).unlink(missing_ok=True)
            raise DatabaseError(
                f"Neo4j exited with status {proc.returncode} while starting; see "
                f"{logs / 'neo4j.log'} and {logs / 'console.log'}:\n{_tail(logs)}"
            )
        if _log_says_started(logs) and wait_for_port(cfg.listen_address, cfg.bolt_port, 1):
            if not password_known:
                _adopt_password(cfg, password, log)
            log(f"Neo4j is up: Bolt {cfg.bolt_uri}, Browser {cfg.browser_url}")
            return proc.pid
        time.sleep(0.5)
    raise DatabaseError(
        f"Neo4j did not open Bolt on port {cfg.bolt_port} within {timeout:.0f} s; see "
        f"{logs / 'neo4j.log'}"
    )


def _adopt_password(cfg: ServerConfig, password: str, log) -> None:
    """Keep NEO4J_PASSWORD in the lost password file once the server has accepted it.

    A wrong one is refused before anything is written, and the server started for it is
    stopped: a start that fails leaves nothing running.
    """
    try:
        _check_password(cfg, password)
    except DatabaseError:
        stop(cfg, log=log)
        raise
    path = password_path(cfg.home)
    _write_secret(path, password)
    log(f"the server accepted NEO4J_PASSWORD; kept it in {path} again")


def _log_says_started(logs: Path) -> bool:
    try:
        with open(logs / "neo4j.log", "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            return b"Started." in fh.read()
    except FileNotFoundError:
        return False


def _tail(logs: Path, lines: int = 15) -> str:
    text = ""
    for name in ("neo4j.log", "console.log"):
        try:
            text += (logs / name).read_text(errors="replace")
        except FileNotFoundError:
            pass
    return "\n".join(text.splitlines()[-lines:])


def stop(cfg: ServerConfig, timeout: float = 60.0, log=print) -> bool:
    """Stop gracefully (SIGTERM lets Neo4j flush and checkpoint); False if it was not running."""
    pid = running_pid(cfg)
    if pid is None:
        other = _pid_in_file(cfg)
        if other is not None and pid_alive(other):
            log(
                f"{pid_file(cfg)} names process {other}, which is not the Neo4j server of "
                f"{cfg.home} (a copied home?); left it alone"
            )
        pid_file(cfg).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.3)
    else:
        log(f"Neo4j (pid {pid}) ignored SIGTERM for {timeout:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    pid_file(cfg).unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps the server when this process started it
    except ChildProcessError:
        pass
    return pid_alive(pid)


def _tree_bytes(path: Path) -> int:
    """Bytes on disk of the files under `path` (0 when it does not exist); a file that
    vanishes while counting (a rotated log) is skipped."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def disk_usage(cfg: ServerConfig) -> dict:
    """Sizes in bytes of what the home keeps: the stores (`data/databases`), the transaction
    logs (`data/transactions`), the server's own logs (`logs`), per database and in total.

    Read from the files, so it works with the server stopped; while it runs, sizes move.
    """
    data = cfg.home / "data"
    databases: dict[str, dict[str, int]] = {}
    for kind, folder in (
        ("store_bytes", data / "databases"),
        ("tx_log_bytes", data / "transactions"),
    ):
        if folder.is_dir():
            for db in sorted(p for p in folder.iterdir() if p.is_dir()):
                databases.setdefault(db.name, {"store_bytes": 0, "tx_log_bytes": 0})
                databases[db.name][kind] = _tree_bytes(db)
    return {
        "store_bytes": sum(d["store_bytes"] for d in databases.values()),
        "tx_log_bytes": sum(d["tx_log_bytes"] for d in databases.values()),
        "server_log_bytes": _tree_bytes(cfg.home / "logs"),
        "home_bytes": _tree_bytes(cfg.home),
        "tx_log_retention": cfg.tx_log_retention,
        "databases": databases,
    }


def describe(cfg: ServerConfig) -> dict:
    info = asdict(cfg)
    info["home"] = str(cfg.home)
    info["java_home"] = str(cfg.java_home) if cfg.java_home else None
    info["installed"] = read_manifest(cfg.home)
    info["pid"] = running_pid(cfg)
    info["password_file"] = str(cfg.home / "conf" / PASSWORD_FILE)
    return info
