"""How a command finds the service it talks to: the client options, --profile (one object, passed
whole), and the embedded simulated service with its --server-* options. Options given win over the
profile, the profile over the settings' defaults."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ScoringError
from .redact import API_KEY_ENV, key_variable, safe_url
from .service import ServiceProfile, load_profile, simulated_config
from .settings import ClientConfig, ServerConfig, add_options, options_given


def add_server_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The simulated service's settings; under `score`/`probe` as --server-*, and there the fields
    are the client's (the embedded service must speak the client's protocol)."""
    g = p.add_argument_group("simulated service" + (" (when --url is absent)" if prefix else ""))
    add_options(g, ServerConfig, "service", prefix, skip=("request_field", "score_field") if prefix else ())


def server_config(args: argparse.Namespace, prefix: str = "", profile: ServiceProfile | None = None,
                  **overrides) -> ServerConfig:
    """The simulated service: the options given over the profile's figures and behaviour, else over the
    defaults."""
    return simulated_config(profile, options_given(args, ServerConfig, prefix) | overrides)


def serve_config(args: argparse.Namespace, **overrides) -> ServerConfig:
    """`serve`'s service: its options given over `--profile`'s (the profile's behaviour, simulated)."""
    return server_config(args, "", load_profile(args.profile) if args.profile else None, **overrides)


def add_client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service and client")
    add_options(g, ClientConfig, "client")
    g.add_argument("--profile", metavar="NAME", help="service profile (profiles/NAME.yaml or a .yaml path): "
                   "url, fields, the variable holding the API key, and the known latency/capacity/rate limit "
                   "the bounds use; an option given here wins over it")


@dataclass(frozen=True)
class Service:
    """The service a command talks to, resolved once: options given > the profile > the defaults."""

    profile: ServiceProfile | None
    client: dict  # ClientConfig keywords but the url
    url: str | None  # None: an embedded simulated service

    def client_config(self, url: str) -> ClientConfig:
        return ClientConfig(url=url, **self.client)

    def server_config(self, args: argparse.Namespace) -> ServerConfig:
        """The embedded simulated service: the --server-* options given over the profile's (its figures
        and behaviour), else over the defaults; speaking the client's protocol."""
        fields = {k: v for k, v in self.client.items() if k in ("request_field", "score_field")}
        return server_config(args, "server-", self.profile, **fields)


def resolve_service(args: argparse.Namespace) -> Service:
    """Resolve --profile and the client options. A key variable named on purpose (by --api-key-env or
    the profile) but unset is said once on stderr: no key is sent, and $SCORING_API_KEY is not used in
    its place (it may belong to another service)."""
    profile = load_profile(args.profile) if getattr(args, "profile", None) else None
    given = options_given(args, ClientConfig)
    client = (profile.client_settings() if profile is not None else {}) | given
    url = client.pop("url", None)
    name = client.get("api_key_env", API_KEY_ENV)
    if name != API_KEY_ENV and not os.environ.get(name):
        where = "--api-key-env" if "api_key_env" in given else f"profile {profile.name or args.profile}"
        print(f"warning: {key_variable(name)} (the API key's variable, from {where}) is not set: requests carry no key",
              file=sys.stderr, flush=True)
    return Service(profile, client, url)


def secrets(args: argparse.Namespace | None) -> tuple[str | None, ...]:
    """The run's API key when it lives in a variable other than $SCORING_API_KEY, for redact()."""
    name = getattr(args, "api_key_env", None)
    if not name and getattr(args, "profile", None):
        try:
            name = load_profile(args.profile).api_key_env
        except ScoringError:
            name = None
    return (os.environ.get(name),) if name else ()


@contextmanager
def service_url(args: argparse.Namespace, svc: Service):
    """Yield (url, server_info): the user's (or profile's) url, or an embedded simulated service."""
    if svc.url:
        url = safe_url(svc.url)
        known = {"profile": svc.profile.with_url(url).to_dict()} if svc.profile is not None else {}
        yield svc.url, {"kind": "external", "url": url} | known  # as server.service_info says it
        return
    from .server import SimulatedService, service_info  # the simulator (aiohttp.web) only when it runs here

    config = svc.server_config(args)
    with SimulatedService(config) as service:
        yield service.url, service_info(service.url, "embedded", config, profile=svc.profile)
