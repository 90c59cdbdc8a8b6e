"""The app's settings (ddpm/app/settings.py): every DDPM_APP_* variable parsed into its field, the defaults, and each
bad value refused with the variable's name, the value and what is allowed."""
import dataclasses
import os

import pytest

from ddpm.app import settings as S
from ddpm.app.settings import Settings, changed_settings, load_settings, settings, use_settings
from ddpm.pretrained import BUNDLED_DIR

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "deploying.md")


def test_defaults():
    s = load_settings({})
    assert s == Settings()
    assert (s.sampling_concurrency, s.train_concurrency) == (2, 2)
    assert (s.session_jobs, s.max_waiting, s.address_jobs, s.proxy_hops, s.session_calls) == (2, 32, 16, 0, 8)
    assert (s.address_calls, s.address_upload_mb, s.address_sessions, s.session_idle_s) == (128, 256, 128, 600)
    assert (s.max_tmp_mb, s.sweep_s, s.min_file_age_s, s.malloc_trim) == (1024, 60, 120, True)
    assert (s.models, s.judge, s.hub_models) == (BUNDLED_DIR, True, ("google/ddpm-cifar10-32",))
    assert (s.max_job_seconds, s.max_sessions, s.max_held_models) == (360, 256, 48)
    assert (s.torch_threads, s.max_train_seconds, s.max_playground_seconds) == (None, 300, 60)


def test_every_variable_is_read_into_its_field(tmp_path):
    env = {"DDPM_APP_SAMPLING_CONCURRENCY": "3", "DDPM_APP_TRAIN_CONCURRENCY": "1", "DDPM_APP_SESSION_JOBS": "4",
           "DDPM_APP_MAX_WAITING": "10", "DDPM_APP_ADDRESS_JOBS": "7", "DDPM_APP_PROXY_HOPS": "2",
           "DDPM_APP_SESSION_CALLS": "5", "DDPM_APP_ADDRESS_CALLS": "6", "DDPM_APP_ADDRESS_UPLOAD_MB": "0.5",
           "DDPM_APP_ADDRESS_SESSIONS": "3", "DDPM_APP_SESSION_IDLE_S": "30", "DDPM_APP_MAX_TMP_MB": "12.5",
           "DDPM_APP_SWEEP_S": "3",
           "DDPM_APP_MIN_FILE_AGE_S": "0", "DDPM_APP_MALLOC_TRIM": "0", "DDPM_APP_MODELS": str(tmp_path),
           "DDPM_APP_JUDGE": "0", "DDPM_APP_HUB_MODELS": " a/b, c-d/e.f ,", "DDPM_APP_MAX_JOB_SECONDS": "90",
           "DDPM_APP_MAX_SESSIONS": "9", "DDPM_APP_MAX_HELD_MODELS": "0", "DDPM_APP_TORCH_THREADS": " 6 ",
           "DDPM_APP_MAX_TRAIN_SECONDS": "30", "DDPM_APP_MAX_PLAYGROUND_SECONDS": "15"}
    assert set(env) == {S.variable(f.name) for f in dataclasses.fields(Settings)}      # one variable per field
    assert load_settings(env) == Settings(
        sampling_concurrency=3, train_concurrency=1, session_jobs=4, max_waiting=10, address_jobs=7, proxy_hops=2,
        session_calls=5, address_calls=6, address_upload_mb=0.5, address_sessions=3, session_idle_s=30, max_tmp_mb=12.5,
        sweep_s=3, min_file_age_s=0, malloc_trim=False, models=str(tmp_path),
        judge=False, hub_models=("a/b", "c-d/e.f"), max_job_seconds=90, max_sessions=9, max_held_models=0,
        torch_threads=6, max_train_seconds=30, max_playground_seconds=15)


def test_blank_is_the_default_but_an_empty_hub_list_lists_none():
    assert load_settings({"DDPM_APP_SESSION_JOBS": "", "DDPM_APP_TORCH_THREADS": "  "}) == Settings()
    assert load_settings({"DDPM_APP_HUB_MODELS": ""}).hub_models == ()


def test_defaults_that_follow_other_settings():
    assert load_settings({"DDPM_APP_MAX_WAITING": "100"}).address_jobs == 50           # half the waiting places
    assert load_settings({"DDPM_APP_SESSION_JOBS": "9", "DDPM_APP_MAX_WAITING": "4"}).address_jobs == 9
    assert load_settings({"DDPM_APP_MAX_SESSIONS": "9"}).address_sessions == 4         # half the sessions
    assert load_settings({"DDPM_APP_MAX_SESSIONS": "1"}).address_sessions == 1
    assert load_settings({"SPACE_ID": "someone/ddpm"}).proxy_hops == 1                 # a Space: behind its proxy
    assert load_settings({"SPACE_ID": "someone/ddpm", "DDPM_APP_PROXY_HOPS": "0"}).proxy_hops == 0


@pytest.mark.parametrize("name, bad, allowed", [
    ("SAMPLING_CONCURRENCY", "x", "give a whole number >= 1"),
    ("TRAIN_CONCURRENCY", "0", "give a whole number >= 1"),
    ("SESSION_JOBS", "x", "give a whole number >= 1"),
    ("MAX_WAITING", "2.5", "give a whole number >= 1"),
    ("ADDRESS_JOBS", "-1", "give a whole number >= 1"),
    ("PROXY_HOPS", "one", "give a whole number >= 0"),
    ("SESSION_CALLS", "0", "give a whole number >= 1"),
    ("ADDRESS_CALLS", "0", "give a whole number >= 1"),
    ("ADDRESS_UPLOAD_MB", "-1", "give a number >= 0"),
    ("ADDRESS_SESSIONS", "0", "give a whole number >= 1"),
    ("SESSION_IDLE_S", "soon", "give a number >= 0"),
    ("MAX_TMP_MB", "-5", "give a number >= 0"),
    ("MAX_TMP_MB", "1GB", "give a number >= 0"),
    ("SWEEP_S", "0", "give a number > 0"),
    ("SWEEP_S", "nan", "give a number > 0"),
    ("MIN_FILE_AGE_S", "inf", "give a number >= 0"),
    ("MALLOC_TRIM", "yes", "give 1 (on, the default) or 0 (off)"),
    ("MODELS", "/no/such/folder", "give a folder that exists"),
    ("JUDGE", "false", "give 1 (on, the default) or 0 (off)"),
    ("HUB_MODELS", "a/b, ../etc", "'../etc' is not a Hub model id"),
    ("MAX_JOB_SECONDS", "0", "give a number > 0"),
    ("MAX_SESSIONS", "0", "give a whole number >= 1"),
    ("MAX_HELD_MODELS", "-1", "give a whole number >= 0"),
    ("TORCH_THREADS", "two", "give a whole number >= 1"),
    ("TORCH_THREADS", "1.5", "give a whole number >= 1"),
    ("MAX_TRAIN_SECONDS", "4", "give a whole number >= 5"),
    ("MAX_PLAYGROUND_SECONDS", "0", "give a whole number >= 1"),
])
def test_a_bad_value_is_refused_with_its_name_and_what_is_allowed(name, bad, allowed):
    with pytest.raises(ValueError) as err:
        load_settings({f"DDPM_APP_{name}": bad})
    assert str(err.value).startswith(f"DDPM_APP_{name}={bad!r}: ") and allowed in str(err.value)


def test_every_field_has_a_reader():
    assert set(S.READERS) == {f.name for f in dataclasses.fields(Settings)}


def test_a_misspelt_variable_is_refused_not_ignored():
    with pytest.raises(ValueError, match=r"DDPM_APP_SESION_JOBS is not a setting of the app; the settings are \[.*"
                                         r"'DDPM_APP_SESSION_JOBS'"):
        load_settings({"DDPM_APP_SESION_JOBS": "3"})


def test_settings_are_read_once_and_can_be_replaced():
    before = use_settings(None)
    try:
        first = settings()
        assert settings() is first                                   # cached: the environment is read once
        with changed_settings(max_job_seconds=0.5) as changed:
            assert settings() is changed and changed.max_job_seconds == 0.5 and changed.max_waiting == first.max_waiting
        assert settings() is first
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.max_waiting = 1
    finally:
        use_settings(before)


def test_every_variable_is_documented():
    docs = open(DOCS, encoding="utf-8").read()
    missing = [S.variable(f.name) for f in dataclasses.fields(Settings) if f"`{S.variable(f.name)}`" not in docs]
    assert not missing, f"docs/deploying.md does not document {missing}"
