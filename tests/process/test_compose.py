"""docker-compose.yml, read: what a user relies on when running it. No Docker
engine runs here, so the test interpolates the file as Compose does (with
sample values for the required variables) and checks it against the router
itself: its subcommands, the variables it reads, its routes loader, the
Dockerfile's image, and the Valkey configs in deploy/ (docs/deployment.md)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import router.cli.main as cli
from router.config.loading import load
from router.config.settings import Settings, documented_variables
from tests.support import ROOT
from tests.support.routes import committed, shipped_routes
from tests.unit.test_dockerfile import image_env

COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
README = ROOT / "README.md"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"  # the prom/prometheus image's default

# What a user must export before `docker compose up`, and sample values for them.
REQUIRED = {
    "REDIS_PASSWORD": "0123abcd",
    "ROUTER_ADMIN_TOKEN": "admin-token-sample",
    "BOT_URL": "http://bot.example:8080/bot",
}
LONG_RUNNING = {"serve", "api", "worker"}  # the others exit: a restart loop
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|AUTH|API_KEY", re.IGNORECASE)
REQUIRED_REF = re.compile(r"\$\{(\w+):\?[^}]*\}")  # ${VAR:?message}: unset or empty stops compose

# -- Compose interpolation ----------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?+])([^}]*))?\}|\$(\w+)")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's rules: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement}."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = env.get(name)
        unset_or_empty = not value
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else value is None) else str(value)
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise MissingVariable(name)
            return str(value)
        if op in (":+", "+"):
            return "" if (unset_or_empty if op == ":+" else value is None) else arg
        return value or ""

    return _VAR.sub(one, text)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and <<: merges
    assert isinstance(data, dict)
    return data


def compose(env: Mapping[str, str] = REQUIRED) -> dict[str, Any]:
    data = interpolated(raw_compose(), env)
    assert isinstance(data, dict)
    return data


# -- reading services ---------------------------------------------------------


def services(data: dict[str, Any], profile: str | None = None) -> dict[str, dict[str, Any]]:
    """Services `docker compose up` starts: without `profile`, the default
    ones; with it, that profile's."""
    out = {}
    for name, svc in data["services"].items():
        profiles = svc.get("profiles") or []
        if (profile is None and not profiles) or (profile is not None and profile in profiles):
            out[name] = svc
    return out


def is_router(svc: dict[str, Any]) -> bool:
    build = svc.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    return context is not None and (ROOT / context).resolve() == ROOT


def is_valkey(svc: dict[str, Any]) -> bool:
    return str(svc.get("image", "")).startswith(("valkey/valkey:8", "redis:7"))


def is_nginx(svc: dict[str, Any]) -> bool:
    return str(svc.get("image", "")).startswith("nginx:")


def nginx_conf(svc: dict[str, Any]) -> str:
    source = bind_source(svc, "/etc/nginx/conf.d/default.conf")
    assert source is not None and source.is_file(), "mount deploy/nginx.conf as default.conf"
    return "\n".join(line.split("#")[0].rstrip() for line in source.read_text().splitlines())


def networks_of(svc: dict[str, Any]) -> dict[str, Any]:
    networks = svc.get("networks") or ["default"]
    if isinstance(networks, list):
        return {n: None for n in networks}
    return {n: v or {} for n, v in networks.items()}


def shared_networks(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return set(networks_of(a)) & set(networks_of(b))


def aliases(svc: dict[str, Any], networks: set[str]) -> set[str]:
    out: set[str] = set()
    for name, conf in networks_of(svc).items():
        if name in networks and conf:
            out.update(conf.get("aliases") or [])
    return out


def is_server(svc: dict[str, Any]) -> bool:
    """A Valkey (or Redis) server, not a one-shot using the same image."""
    cmd = svc.get("command") or ["valkey-server"]
    return is_valkey(svc) and str(cmd[0]) in ("valkey-server", "redis-server")


def routers(data: dict[str, Any], profile: str | None = None) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(data, profile).items() if is_router(s)}


def all_routers() -> dict[str, dict[str, Any]]:
    """The router services of the default stack and of the `cluster` profile."""
    data = compose()
    return {**routers(data), **routers(data, "cluster")}


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def container_env(svc: dict[str, Any]) -> dict[str, str]:
    """A router container's environment: the image's ENV, then the service's."""
    return {**image_env(), **environment(svc)}


def settings_of(svc: dict[str, Any]) -> Settings:
    return Settings.from_env(container_env(svc))


def mounts(svc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume: a ./path, /path or a named volume."""
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            yield str(v.get("source", "")), str(v["target"])
        else:
            parts = str(v).split(":")
            yield parts[0], parts[1]


def bind_source(svc: dict[str, Any], target: str) -> Path | None:
    """The file of this checkout at `target` in the container, if any: the
    file mounted there, or the file under a folder mounted above it."""
    for source, tgt in mounts(svc):
        if source.startswith((".", "/")) and PurePosixPath(target).is_relative_to(tgt):
            return (ROOT / source / PurePosixPath(target).relative_to(tgt)).resolve()
    return None


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    assert isinstance(cmd, list), f"command in exec form (a list), got {cmd!r}"
    return [str(c) for c in cmd]


def router_help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def seconds(duration: str) -> float:
    """A Compose duration: 1m30s, 20s, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def valkey_config(svc: dict[str, Any]) -> dict[str, str]:
    """The server's effective settings: the config file its command names
    (read from the mounted file of deploy/, `include`s followed), then the
    --name value arguments after it."""
    cmd = command(svc)
    assert cmd[0] in ("valkey-server", "redis-server"), cmd
    config: dict[str, str] = {}
    args = cmd[1:]
    if args and not args[0].startswith("--"):
        _read_config(svc, args.pop(0), config)
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    for name, value in zip(args[::2], args[1::2], strict=True):
        config[name[2:].lower()] = value
    return config


def _read_config(svc: dict[str, Any], target: str, config: dict[str, str]) -> None:
    source = bind_source(svc, target)
    assert source is not None and source.is_file(), f"{target} is not mounted from the checkout"
    for line in source.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0].lower() == "include":
            _read_config(svc, words[1], config)
        else:
            config[words[0].lower()] = " ".join(words[1:])


def memory_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)(b|k|kb|m|mb|g|gb)?", text.strip().lower())
    assert match, f"maxmemory {text!r}"
    scale = {"k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    return int(match.group(1)) * scale.get(match.group(2) or "b", 1)


def routes_source(svc: dict[str, Any]) -> Path:
    routes_file = settings_of(svc).routes_file
    source = bind_source(svc, routes_file)
    assert source is not None, f"nothing of the checkout is mounted at ROUTES_FILE={routes_file}"
    if source.resolve() == (ROOT / "routes.yaml").resolve():
        return shipped_routes()  # as shipped, not as an operator may have edited it
    return committed(source)


def referenced_variables(text: str) -> dict[str, bool]:
    """${VAR} references of a routes file -> whether they have a default."""
    text = text.replace("$$", "")
    return {m[0]: bool(m[1]) for m in re.findall(r"\$\{(\w+)(:?-)?", text)}


# -- the tests ----------------------------------------------------------------


def test_the_default_stack_splits_ingest_and_delivery_over_replicas() -> None:
    data = compose()
    by_command = {command(s)[1]: s for s in routers(data).values()}
    assert set(by_command) == {"api", "worker"}, "production runs `router api` and `router worker`"
    for sub, svc in by_command.items():
        assert "container_name" not in svc, f"{sub}: container_name forbids replicas"
        assert int(svc["deploy"]["replicas"]) >= 1
        # A published host port would clash between replicas: lb publishes.
        assert not svc.get("ports"), f"{sub}: replicas cannot share a host port"


@pytest.mark.parametrize("profile", [None, "cluster"])
def test_the_load_balancer_reaches_every_api_replica_of_its_stack(profile: str | None) -> None:
    data = compose()
    lbs = {n: s for n, s in services(data, profile).items() if is_nginx(s)}
    assert len(lbs) == 1, lbs
    name, lb = lbs.popitem()
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?\S*", lb["image"])
    assert version, f"{name}: pin an nginx version"
    major, minor, patch = (int(g or 0) for g in version.groups())
    assert (major, minor, patch) >= (1, 27, 3), f"{name}: `resolve` needs nginx >= 1.27.3"
    conf = nginx_conf(lb)
    # Docker's DNS, read again: replicas added or recreated are followed.
    assert re.search(r"^resolver 127\.0\.0\.11\b", conf, re.MULTILINE), name
    assert re.search(r"^\s*zone \w+ \d+k;", conf, re.MULTILINE), f"{name}: resolve needs a zone"
    upstream = re.search(r"^\s*server ([\w.-]+):(\d+) resolve;", conf, re.MULTILINE)
    assert upstream, f"{name}: upstream server with `resolve`"
    host, port = upstream.group(1), int(upstream.group(2))
    # The name resolves, on lb's networks, to this stack's `router api` only.
    targets = [
        svc
        for other, svc in data["services"].items()
        if shared_networks(lb, svc) and host in {other, *aliases(svc, shared_networks(lb, svc))}
    ]
    assert len(targets) == 1, f"{name}: {host} names {len(targets)} services"
    api = targets[0]
    assert (api.get("profiles") or [None])[0] == profile and command(api)[1] == "api", name
    assert port == settings_of(api).port, f"{name}: wrong port {port}"
    assert lb["depends_on"][next(iter(lb["depends_on"]))]["condition"] == "service_healthy"
    # Idle upstream connections dropped before uvicorn's 5 s keep-alive closes them.
    keepalive = re.search(r"^\s*keepalive_timeout (\S+);", conf, re.MULTILINE)
    assert keepalive and seconds(keepalive.group(1)) < 5, f"{name}: keepalive_timeout"
    # The router answers 413 for its own max_body; nginx must not refuse first.
    assert re.search(r"^\s*client_max_body_size 0;", conf, re.MULTILINE), name
    listen = re.search(r"^\s*listen (\d+);", conf, re.MULTILINE)
    assert listen, name
    published = [str(p).rsplit(":", 1)[1] for p in lb["ports"]]
    assert published == [listen.group(1)], f"{name}: publishes {published}"
    # Prometheus scrapes each replica itself; through lb a scrape reaches any
    # one of them, and the metrics would be open to every sender.
    assert re.search(r"^\s*location = /metrics \{\s*return 404;", conf, re.MULTILINE), (
        f"{name}: serves /metrics to the outside"
    )


@pytest.mark.parametrize("profile", [None, "cluster"])
def test_every_router_command_is_a_real_long_running_subcommand(
    capsys: pytest.CaptureFixture[str], profile: str | None
) -> None:
    usage = router_help(capsys)
    found = re.search(r"\{([\w,-]+)\}", usage)  # (new-plugin has a hyphen)
    assert found, usage
    subcommands = set(found.group(1).split(","))
    assert {"serve", "api", "worker", "check"} <= subcommands
    svcs = routers(compose(), profile)
    assert svcs
    for name, svc in svcs.items():
        cmd = command(svc)
        assert cmd[0] == "router" and cmd[1] in subcommands, f"{name}: {cmd}"
        assert cmd[1] in LONG_RUNNING, f"{name}: `router {cmd[1]}` exits at once"
        options = router_help(capsys, cmd[1])
        for arg in cmd[2:]:
            assert arg.startswith("--") and arg.split("=")[0] in options, f"{name}: {arg}"


def test_every_variable_set_on_a_router_is_one_it_reads_and_accepts() -> None:
    read = set(documented_variables())
    for name, svc in all_routers().items():
        env = container_env(svc)
        used_by_routes = referenced_variables(routes_source(svc).read_text())
        unknown = set(environment(svc)) - read - set(used_by_routes) - {"PYTHONUNBUFFERED"}
        assert not unknown, f"{name}: the router reads no {sorted(unknown)}"
        Settings.from_env(env)  # a value it cannot use raises SettingsError (one line)
        missing = {v for v, has_default in used_by_routes.items() if not has_default} - set(env)
        assert not missing, f"{name}: routes.yaml needs {sorted(missing)}"


def test_routes_file_is_mounted_at_ROUTES_FILE_and_loads_with_the_service_env() -> None:
    for name, svc in all_routers().items():
        settings = settings_of(svc)
        assert PurePosixPath(settings.routes_file).is_absolute(), name
        source = routes_source(svc)
        assert source.is_file(), f"{name}: {source} does not exist"
        # What `router check` does, with the container's environment.
        config = load(str(source), container_env(svc))
        assert config.routes, name


def test_http_healthchecks_ask_the_router_on_its_port_and_workers_have_none() -> None:
    for name, svc in all_routers().items():
        check = svc.get("healthcheck") or {}
        if command(svc)[1] == "worker":
            # No HTTP in `router worker`: the image's /healthz check would fail.
            assert check.get("disable") is True, f"{name}: disable the image's HEALTHCHECK"
            continue
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), test
        text = " ".join(test[1:])
        url = re.search(r"http://(127\.0\.0\.1|localhost):(\d+)(/\w+)", text)
        assert url, f"{name}: {text}"
        assert int(url.group(2)) == settings_of(svc).port, f"{name}: wrong port"
        assert url.group(3) in ("/healthz", "/readyz"), f"{name}: {url.group(3)}"
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")  # no typo in the one-liner
        for key in ("interval", "timeout", "start_period"):
            seconds(check[key])


def test_router_services_stop_after_their_shutdown_grace() -> None:
    for name, svc in all_routers().items():
        grace = settings_of(svc).shutdown_grace
        assert seconds(svc["stop_grace_period"]) > grace, (
            f"{name}: Docker would SIGKILL in-flight deliveries before ROUTER_SHUTDOWN_GRACE"
        )


def test_redis_keeps_every_write_and_never_evicts() -> None:
    data = compose()
    nodes = [s for s in services(data).values() if is_server(s)]
    nodes += [s for s in services(data, "cluster").values() if is_server(s)]
    named_volumes = set(data.get("volumes") or {})
    assert len(nodes) == 7  # the single server and six cluster nodes
    seen_volumes = []
    for svc in nodes:
        config = valkey_config(svc)
        assert config["appendonly"] == "yes"
        assert config.get("appendfsync", "everysec") in ("everysec", "always")
        assert config["maxmemory-policy"] == "noeviction"
        assert memory_bytes(config["maxmemory"]) > 0, "at maxmemory writes fail, not the host"
        # The AOF (and nodes.conf) on a named volume of its own.
        data_dir = config.get("dir", "/data")
        volume = next(src for src, tgt in mounts(svc) if tgt == data_dir)
        assert volume in named_volumes
        seen_volumes.append(volume)
        check = " ".join(svc["healthcheck"]["test"])
        # valkey-cli exits 0 on "NOAUTH" and "LOADING": only PONG means ready.
        assert "ping" in check and "PONG" in check
    assert len(set(seen_volumes)) == len(seen_volumes)


def test_routers_wait_for_a_healthy_redis_that_their_REDIS_URL_names() -> None:
    data = compose()
    everything = data["services"]
    for profile in (None, "cluster"):
        for name, svc in routers(data, profile).items():
            url = urlsplit(settings_of(svc).redis_url or "")
            target = everything.get(url.hostname or "")
            assert target is not None and is_server(target), f"{name}: REDIS_URL {url.hostname}"
            server = valkey_config(target)
            assert (url.port or 6379) == int(server.get("port", 6379))
            assert url.password == server["requirepass"], f"{name}: wrong password"
            assert shared_networks(svc, target), f"{name}: {url.hostname} is on another network"
            depends = svc["depends_on"]
            if profile is None:
                assert depends[url.hostname]["condition"] == "service_healthy", name
            else:
                # The cluster exists (every slot served) before a router starts.
                assert depends["cluster-init"]["condition"] == "service_completed_successfully"
                init = everything["cluster-init"]["depends_on"]
                for node in cluster_nodes(data):
                    assert init[node]["condition"] == "service_healthy"


def cluster_nodes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in services(data, "cluster").items()
        if is_server(s) and valkey_config(s).get("cluster-enabled") == "yes"
    }


def test_the_cluster_profile_creates_three_masters_with_a_replica_each() -> None:
    data = compose()
    nodes = cluster_nodes(data)
    assert len(nodes) == 6
    init = data["services"]["cluster-init"]
    assert init["profiles"] == ["cluster"] and init.get("restart") == "no"
    script_path = command(init)[-1]
    script = bind_source(init, script_path)
    assert script is not None and script.is_file()
    text = script.read_text()
    assert "valkey-cli --cluster create $CLUSTER_NODES --cluster-replicas 1 --cluster-yes" in text
    # CLUSTER_NODES names each node once, at its fixed address on its network.
    listed = environment(init)["CLUSTER_NODES"].split()
    subnet = data["networks"]["cluster"]["ipam"]["config"][0]
    addresses = []
    for name, svc in nodes.items():
        address = svc["networks"]["cluster"]["ipv4_address"]
        assert ip_address(address) in ip_network(subnet["subnet"]), name
        assert ip_address(address) not in ip_network(subnet["ip_range"]), name
        addresses.append(f"{address}:{valkey_config(svc).get('port', 6379)}")
        assert valkey_config(svc)["masterauth"] == valkey_config(svc)["requirepass"], name
        assert not PurePosixPath(valkey_config(svc)["cluster-config-file"]).is_absolute()
    assert sorted(listed) == sorted(addresses)


def test_no_secret_is_written_in_the_files() -> None:
    raw = raw_compose()
    for name, svc in raw["services"].items():
        for var, value in environment(svc).items():
            if SECRET_NAME.search(var):
                assert REQUIRED_REF.fullmatch(value), f"{name}: {var}={value!r}"
            if var == "REDIS_URL":
                password = re.match(r"\w+://[^@/]*:(\$\{[^}]*\})@", value)
                assert password and REQUIRED_REF.fullmatch(password.group(1)), (
                    f"{name}: REDIS_URL={value!r}"
                )
        if is_server(svc):
            args = [str(a) for a in svc["command"]]
            for flag in ("--requirepass", "--masterauth"):
                if flag in args:
                    assert REQUIRED_REF.fullmatch(args[args.index(flag) + 1]), f"{name}: {flag}"
    for conf in (ROOT / "deploy").glob("*.conf"):
        words = {line.split()[0].lower() for line in conf.read_text().splitlines() if line.strip()}
        assert not words & {"requirepass", "masterauth", "user"}, f"{conf.name} holds a secret"


def test_compose_stops_without_the_required_variables_and_the_doc_names_them() -> None:
    missing = set()
    for name in REQUIRED:
        env = {k: v for k, v in REQUIRED.items() if k != name}
        with pytest.raises(MissingVariable) as caught:
            compose(env)
        missing.add(str(caught.value))
    assert missing == set(REQUIRED)
    compose()  # and nothing else is required
    doc = DEPLOYMENT_DOC.read_text()
    for name in REQUIRED:
        assert name in doc, f"docs/deployment.md does not say to set {name}"


def test_routes_yaml_is_reached_through_a_mounted_folder_as_the_docs_say() -> None:
    image_routes = PurePosixPath(image_env()["ROUTES_FILE"])
    for name, svc in all_routers().items():
        routes_file = PurePosixPath(settings_of(svc).routes_file)
        # Where the image keeps its own: `docker run -v DIR:...` and compose agree.
        assert routes_file == image_routes, name
        mount = [(src, tgt) for src, tgt in mounts(svc) if routes_file.is_relative_to(tgt)]
        assert len(mount) == 1, f"{name}: {len(mount)} mounts hold {routes_file}"
        source, target = mount[0]
        # A folder: a bind-mounted file keeps its inode, so the reload
        # (router.runtime.reload, by path) would never see a file an editor replaced
        # by renaming a new one over it.
        assert PurePosixPath(target) == routes_file.parent, f"{name}: mounts the file alone"
        assert (ROOT / source).is_dir(), f"{name}: {source} is not a folder of the checkout"
    for doc in (README, DEPLOYMENT_DOC):
        text = doc.read_text()
        assert f":{image_routes.parent}" in text, f"{doc.name}: no folder mount example"
        assert not re.search(r"routes\.yaml:/", text), f"{doc.name}: mounts the file"


def prometheus_targets(job: dict[str, Any]) -> set[tuple[str, int]]:
    """(host name, port) of a scrape job: its A-record DNS names and static targets."""
    out = set()
    for sd in job.get("dns_sd_configs") or []:
        assert sd.get("type") == "A", "SRV records: Docker's DNS has none"
        out.update((host, int(sd["port"])) for host in sd["names"])
    for static in job.get("static_configs") or []:
        for target in static["targets"]:
            host, _, port = str(target).rpartition(":")
            out.add((host, int(port)))
    return out


@pytest.mark.parametrize("profile", [None, "cluster"])
def test_prometheus_scrapes_every_router_replica_where_it_serves_metrics(
    profile: str | None,
) -> None:
    data = compose()
    proms = {
        n: s
        for n, s in services(data, profile).items()
        if str(s.get("image", "")).startswith("prom/prometheus:v")
    }
    assert len(proms) == 1, proms
    name, prom = proms.popitem()
    assert "command" not in prom, f"{name}: the image's command reads {PROMETHEUS_CONFIG}"
    source = bind_source(prom, PROMETHEUS_CONFIG)
    assert source is not None and source.is_file(), f"{name}: mount deploy/prometheus.yml"
    jobs = yaml.safe_load(source.read_text())["scrape_configs"]
    # Its UI and API have no authentication: on the host's loopback only.
    assert all(str(p).startswith("127.0.0.1:") for p in prom.get("ports") or []), name
    scraped = []
    for router_name, svc in routers(data, profile).items():
        settings = settings_of(svc)
        assert settings.metrics, f"{router_name}: ROUTER_METRICS is off"
        sub = command(svc)[1]
        port = settings.metrics_port if sub == "worker" else settings.port
        assert port is not None, f"{router_name}: `router worker` needs ROUTER_METRICS_PORT"
        assert settings.host not in ("127.0.0.1", "localhost", "::1"), router_name
        networks = shared_networks(prom, svc)
        assert networks, f"{router_name}: not on {name}'s network"
        jobs_here = [
            job
            for job in jobs
            if any(
                p == port and host in {router_name, *aliases(svc, networks)}
                for host, p in prometheus_targets(job)
            )
        ]
        assert len(jobs_here) == 1, f"{router_name}: {len(jobs_here)} jobs scrape it on {port}"
        job = jobs_here[0]
        assert job.get("metrics_path", "/metrics") == "/metrics", router_name
        assert job.get("scheme", "http") == "http", router_name
        if settings.metrics_token:
            credentials = (job.get("authorization") or {}).get("credentials_file")
            assert credentials and bind_source(prom, credentials), (
                f"{router_name}: ROUTER_METRICS_TOKEN set, {name} sends no token"
            )
        scraped.append(sub)
    assert sorted(set(scraped)) == ["api", "worker"]
    # Each name the jobs ask for is one router service on Prometheus's networks.
    for job in jobs:
        for host, _ in prometheus_targets(job):
            named = [
                n
                for n, svc in data["services"].items()
                if shared_networks(prom, svc)
                and host in {n, *aliases(svc, shared_networks(prom, svc))}
                and (svc.get("profiles") or [None])[0] == profile
            ]
            assert len(named) == 1 and is_router(data["services"][named[0]]), (job, host)


def test_every_variable_of_the_compose_file_is_in_the_deployment_doc() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    missing = sorted(v for v in used if f"`{v}`" not in doc)
    assert not missing, f"docs/deployment.md does not explain {missing}"
