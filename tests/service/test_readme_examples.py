"""Every curl example of the README's service section, sent as written (``$API``, ``JOB_ID`` and ``MODEL_ID``
filled in) to the app on a store holding a panel with AAPL, MSFT and GOOGL: each answers 200 (a model update 202),
and the example that posts a made-up row deletes it again, so the examples leave no fake data behind."""

from __future__ import annotations

import datetime
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from service_helpers import API, ClientFactory

from factor_engine.synthetic import generate_market

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass
class Curl:
    """One curl command: method, URL, headers, body (``-d`` text or ``--data-binary @file`` name)."""

    method: str = "GET"
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    data_file: str | None = None


def readme_curl_examples() -> list[Curl]:
    """The curl commands of the code block after "For example (`API=" in the README, parsed as a shell would:
    backslash-newline joins lines, quoted JSON may span lines, ``#`` starts a comment."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("For example (`API=") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)].replace("\\\n", " ")
    commands: list[str] = []
    for line in block.splitlines():
        if line.lstrip().startswith("curl "):
            commands.append(line)
        else:
            commands[-1] += "\n" + line
    examples = []
    for command in commands:
        words = shlex.split(command, comments=True)
        curl, position = Curl(), 1
        while position < len(words):
            word = words[position]
            if word == "-s":
                position += 1
                continue
            if word in ("-X", "-H", "-d", "--data-binary"):
                value = words[position + 1]
                if word == "-X":
                    curl.method = value
                elif word == "-H":
                    name, _, header = value.partition(":")
                    curl.headers[name.strip()] = header.strip()
                elif word == "-d":
                    curl.data = value
                else:
                    curl.data_file = value.removeprefix("@")
                position += 2
                continue
            assert not word.startswith("-"), f"an option the test does not know: {word} in {command}"
            curl.url = word
            position += 1
        if curl.method == "GET" and (curl.data is not None or curl.data_file is not None):
            curl.method = "POST"
        examples.append(curl)
    return examples


def test_the_readme_has_a_curl_example_of_each_kind() -> None:
    routes = {(curl.method, curl.url.split("?")[0].removeprefix("$API")) for curl in readme_curl_examples()}
    assert ("POST", "/data/panel") in routes and ("DELETE", "/data/panel") in routes
    assert ("POST", "/portfolio/risk") in routes and ("POST", "/risk-model/create") in routes


def test_readme_curl_examples_answer_200(app_client: ClientFactory, tmp_path: Path) -> None:
    panel = generate_market(120, 780, seed=11, start=datetime.date(2021, 1, 4)).panel
    panel = panel.with_columns(pl.col("symbol").replace({"S00001": "AAPL", "S00002": "MSFT", "S00003": "GOOGL"}))
    panel.write_parquet(tmp_path / "panel.parquet")
    model_id = ""
    with app_client() as client:
        for curl in readme_curl_examples():
            url = curl.url.replace("$API", API).replace("MODEL_ID", model_id).replace("JOB_ID", model_id)
            body = curl.data
            content = (tmp_path / curl.data_file).read_bytes() if curl.data_file else None
            if body is not None:
                body = body.replace("MODEL_ID", model_id)
            response = client.request(curl.method, url, content=content or body, headers=curl.headers)
            accepted = curl.method == "POST" and url.endswith("/update")  # a model update is always a job
            assert response.status_code == (202 if accepted else 200), (curl, response.text)
            answer = response.json()
            if url.endswith("/risk-model/create"):
                model_id = answer["id"]
            if curl.method == "POST" and url.endswith("/data/panel"):
                assert (answer["inserted"], answer["symbols"]) == (1, 1)
            if curl.method == "DELETE":
                assert answer == {"deleted": 1}
            if url.endswith("/data/panel/upload"):
                assert answer["inserted"] == panel.height
        assert model_id, "no example created a model"
        summary = client.get(f"{API}/data/summary").json()
        symbols = client.get(f"{API}/data/symbols").json()["symbols"]
    assert summary["rows"] == panel.height  # the example row is gone again
    assert "EXAMPLE1" not in symbols
