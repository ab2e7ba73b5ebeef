"""Every prefect.yaml deployment points at a loadable flow whose parameters validate."""

from __future__ import annotations

import yaml

from tests.conftest import PROJECT_ROOT


def deployments() -> list[dict]:
    return yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]


def test_entrypoints_load_and_parameters_validate(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(PROJECT_ROOT)
    seen = set()
    for dep in deployments():
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        params = flow.validate_parameters(dep.get("parameters") or {})
        assert dep["name"] not in seen
        seen.add(dep["name"])
        schema = flow.parameters.model_dump()
        assert schema["properties"], dep["name"]  # typed parameters render as a form in the UI
        for s in dep.get("schedules") or []:
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
        assert params is not None


def test_config_parameter_has_descriptions():
    from flows.pipeline import pipeline_flow

    defs = pipeline_flow.parameters.model_dump()["definitions"]
    for name in ("CollectConfig", "CleanConfig", "ValidateConfig", "IndexConfig", "TrainConfig", "SFTDataConfig",
                 "EvalConfig", "GateConfig", "JudgeConfig"):
        props = defs[name]["properties"]
        missing = [k for k, v in props.items() if not v.get("description")]
        assert not missing, (name, missing)
