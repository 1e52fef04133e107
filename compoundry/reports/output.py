"""Where a report's files go: a local folder or ``s3://bucket/prefix`` (boto3), and the PNG charts.

S3 uses boto3's usual configuration: credentials from the standard chain and
the endpoint from ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (MinIO,
a local S3 in tests). :func:`open_target` checks the bucket answers before
anything is written, so a wrong bucket is one clear error, not half a report.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from compoundry.reports.cost import CostReport, ReportError

FORMATS = ("csv", "parquet")


def default_out(settings) -> str:
    """Reports go under the platform's state folder unless told otherwise."""
    return str(settings.state_dir / "reports")


@dataclass(frozen=True)
class Target:
    """A folder (``path``) or an S3 location (``bucket`` + ``prefix``) for one report's files."""

    location: str
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    client: object | None = None

    def put(self, name: str, body: bytes) -> str:
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_bytes(body)
            return str(self.path / name)
        key = f"{self.prefix}/{name}" if self.prefix else name
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return f"s3://{self.bucket}/{key}"


def open_target(out: str, report_name: str) -> Target:
    """The report's own folder under ``out`` (``<out>/<report name>/``); S3 checked reachable first."""
    if not out.startswith("s3://"):
        return Target(location=str(Path(out) / report_name), path=Path(out) / report_name)
    bucket, _, prefix = out[len("s3://"):].partition("/")
    if not bucket:
        raise ReportError(f"--out {out!r}: expected s3://bucket[/prefix]")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3")
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise ReportError(f"S3 bucket {bucket!r} is not usable (error {code}): check its name and your credentials"
                          ) from None
    except BotoCoreError as exc:
        raise ReportError(f"S3 bucket {bucket!r} cannot be reached: {exc}") from None
    prefix = "/".join(p for p in (prefix.strip("/"), report_name) if p)
    return Target(location=f"s3://{bucket}/{prefix}", bucket=bucket, prefix=prefix, client=client)


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise ReportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def write_report(report: CostReport, target: Target, fmt: str) -> dict[str, str]:
    """Every table as ``<name>.<fmt>``, the charts as PNG; ``name -> where it was written``."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    written = {f"{name}.{fmt}": target.put(f"{name}.{fmt}", table_bytes(frame, fmt))
               for name, frame in report.tables.items()}
    for name, png in charts(report).items():
        written[name] = target.put(name, png)
    return written


def charts(report: CostReport) -> dict[str, bytes]:
    """``cost_by_pipeline.png`` (stacked by component) and ``critical_path_share.png`` (per pipeline)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    lines = _labelled(report, report.tables["lines"])
    cost = lines.pivot_table(index="pipeline", columns="component", values="cost", aggfunc="sum", fill_value=0.0)
    shares = _labelled(report, report.tables["critical_path_shares"])
    share = shares.pivot_table(index="pipeline", columns="component", values="share", aggfunc="sum", fill_value=0.0)
    out = {}
    for name, frame, title, ylabel in (
            ("cost_by_pipeline.png", cost, "Cost per pipeline, by component", "cost"),
            ("critical_path_share.png", share, "Share of the critical path, by component", "share")):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        if frame.empty:
            ax.text(0.5, 0.5, "no data in this window", ha="center", va="center")
            ax.set_axis_off()
        else:
            frame.plot(kind="bar", stacked=True, ax=ax)
            ax.set_ylabel(ylabel)
            ax.legend(title="component", fontsize="small")
            ax.tick_params(axis="x", labelrotation=0)
        ax.set_title(f"{title}\n{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out


def _labelled(report: CostReport, frame: pd.DataFrame) -> pd.DataFrame:
    """Retired pipelines and components read ``name (retired)`` in a chart (tables have a ``retired`` column)."""
    frame = frame.copy()
    for column, names in report.retired.items():
        if column in frame.columns and names:
            frame[column] = [f"{v} (retired)" if v in names else v for v in frame[column]]
    return frame
