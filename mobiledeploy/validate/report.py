"""report/index.html from the Jinja2 template in templates/report/ (readable without a server)."""

from __future__ import annotations


def render_html(report: dict, manifest: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from ..resources import resource_dir

    env = Environment(loader=FileSystemLoader(str(resource_dir("templates") / "report")),
                      undefined=StrictUndefined, autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("index.html.j2").render(report=report, manifest=manifest)
