"""Celery: a real prefork worker (kombu's filesystem transport) against the stand-in."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

celery = pytest.importorskip("celery")

import courier_analytics as analytics  # noqa: E402
from courier_analytics.devserver import DevServer, Faults  # noqa: E402
from courier_analytics.integrations.celery import HEADER, install  # noqa: E402

from .conftest import KEY  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def broker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the filesystem broker and the result backend live in."""
    return Path(tmp_path_factory.mktemp("celery"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty working folder for the producer and the workers, checked empty at the end.

    kombu's filesystem transport writes whatever the app leaves unset (the exchange
    tables, by default) under the working folder: in the repository, when pytest runs
    from it. The producer works here, and the workers it starts inherit the folder,
    so such a stray file fails the module instead.
    """
    folder = Path(tmp_path_factory.mktemp("celery-cwd"))
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
    assert sorted(path.name for path in folder.iterdir()) == []


@pytest.fixture(scope="module")
def tasks(broker_dir: Path, workdir: Path) -> Iterator[ModuleType]:
    """The test app's module, imported in this (the producer's) process."""
    previous = os.environ.get("CELERY_TEST_DIR")
    os.environ["CELERY_TEST_DIR"] = str(broker_dir)
    try:
        yield importlib.import_module("integrations.apps.celery_app")
    finally:
        if previous is None:
            del os.environ["CELERY_TEST_DIR"]


class Worker:
    """``celery worker -P prefork`` in a subprocess; ``stop()`` is a warm shutdown (SIGTERM)."""

    def __init__(self, broker_dir: Path, courier: DevServer, *, concurrency: int, flush: bool):
        env = {
            **os.environ,
            "CELERY_TEST_DIR": str(broker_dir),
            "COURIER_API_KEY": KEY,
            "COURIER_BASE_URL": courier.base_url,
            "FLUSH_AFTER_TASK": "1" if flush else "0",
            "TRACK_AT_IMPORT": "1",
            "COURIER_TEST_ROUTE": "segment",  # the route whose messages carry the context
            "PYTHONPATH": str(HERE.parent),
        }
        command = [
            sys.executable, "-m", "celery", "-A", "integrations.apps.celery_app", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--without-heartbeat", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, stderr
        return stderr


def send(task: Any, users: list[str], per_user: int, args: tuple[Any, ...] = ()) -> list[Any]:
    """Send per_user tasks for each user, each from inside that user's scope."""
    analytics.configure(api_key=KEY, send=False)  # the producer's own client sends nothing
    results = []
    for n in range(per_user):
        for name in users:
            with analytics.scope(user_id=name, context={"ip": f"192.0.2.{len(name)}"}):
                results.append(task.delay(n, *args))
    return results


def test_the_producers_scope_reaches_the_task_and_children_deliver_at_exit(
    tasks: ModuleType, broker_dir: Path, courier: DevServer
) -> None:
    """Each task's events have its requester's user and context; a warm shutdown loses none.

    Each task tracks 10 events at once and the stand-in answers after 150 ms (one
    request in flight per user), so the prefork children still hold most events
    when the worker is stopped: they must deliver them on their way out.
    """
    courier.set_faults(Faults(latency_ms=150))
    users = ["ada", "grace", "linus"]
    worker = Worker(broker_dir, courier, concurrency=2, flush=False)
    try:
        results = send(tasks.burst, users, per_user=6, args=(10,))
        answers = [result.get(timeout=120, interval=0.05) for result in results]
    finally:
        at_stop = len(courier.events())
        worker.stop()
    print(f"{at_stop} of 180 events had arrived when the worker was told to stop")
    assert answers == users * 6
    events = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:Export Finished"]
    assert len(events) == 180
    assert sorted((e["user"], e["data"]["properties"]["report"]) for e in events) == sorted(
        (name, n) for name in users for n in range(6) for _ in range(10)
    )
    assert all(e["data"]["context"]["ip"] == f"192.0.2.{len(e['user'])}" for e in events)
    assert courier.stats()["duplicates"] == 0
    # Tracked by the main process before it forked its children; sent by it alone.
    booted = [e for e in courier.events() if e["event"] == "Segment-TrackEvent:Worker Booted"]
    assert len(booted) == 1


def test_flush_after_task_delivers_each_tasks_events_before_the_next_task(
    tasks: ModuleType, broker_dir: Path, courier: DevServer
) -> None:
    """flush_after_task=True: one prefork child, and each task finds all earlier events there."""
    courier.set_faults(Faults(latency_ms=150))
    worker = Worker(broker_dir, courier, concurrency=1, flush=True)
    try:
        results = send(tasks.export, ["ada"], per_user=5)
        answers = [result.get(timeout=120, interval=0.05) for result in results]
    finally:
        worker.stop()
    # The filesystem queue may run them in any order; whatever the order, the k-th
    # task to run finds the k-1 events of those before it: distinct counts 0..4.
    assert sorted(answer["seen"] for answer in answers) == [0, 1, 2, 3, 4]
    assert {answer["user"] for answer in answers} == {"ada"}


def test_a_task_sent_outside_any_scope_carries_no_header(tasks: ModuleType) -> None:
    """No scope, no header: the task's calls must name their user as usual."""
    headers: dict[str, Any] = {}
    installed = next(iter(_installed_for(tasks.app)))
    installed.before_publish(headers=headers)
    assert HEADER not in headers
    with analytics.scope(user_id="ada", traits={"plan": "pro"}):
        installed.before_publish(headers=headers)
    assert headers[HEADER]["user_id"] == "ada"
    assert headers[HEADER]["traits"] == {"plan": "pro"}


def test_a_scope_that_is_not_json_is_left_out_not_raised(
    tasks: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """Traits that no serializer could carry: the task is still sent, without the scope."""
    headers: dict[str, Any] = {}
    installed = next(iter(_installed_for(tasks.app)))
    with analytics.scope(user_id="ada", traits={"obj": object()}):
        installed.before_publish(headers=headers)
    assert HEADER not in headers
    assert "not JSON-serialisable" in caplog.text


def test_install_refuses_what_is_not_a_celery_app() -> None:
    """install() names its argument when given something else."""
    with pytest.raises(TypeError, match=r"celery_app must be a celery\.Celery app"):
        install(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flush_timeout"):
        install(celery.Celery("x"), flush_timeout=-1)


def _installed_for(app: Any) -> Iterator[Any]:
    from courier_analytics.integrations import celery as integration

    yield integration._installed[id(app)]


@pytest.fixture
def scoped_app() -> Any:
    """An app run in this process with Celery's own tracer (task.apply), installed."""
    app = celery.Celery("scopes", set_as_current=False)
    install(app)

    @app.task(name="scopes.whoami", shared=False)  # this app only: each test makes one
    def whoami(fail: bool = False, barrier: Any = None) -> str | None:
        if barrier is not None:
            barrier.wait()  # both runs in flight at once
        if fail:
            raise ConnectionResetError("the task failed")
        user = analytics.user()
        return user.id if user else None

    # Bound now, not by the first apply(): two threads binding it at once race
    # (one finds no request stack yet), which broke the test that runs two at once.
    app.finalize()
    return app.tasks["scopes.whoami"]


def run(task: Any, user_id: str | None = None, task_id: str | None = None, **kwargs: Any) -> Any:
    """Run ``task`` as a worker would, from a message sent inside ``user_id``'s scope."""
    headers = {HEADER: {"user_id": user_id}} if user_id else {}
    return task.apply(kwargs=kwargs, headers=headers, task_id=task_id).result


def test_a_failing_task_leaves_no_scope_on_the_worker_thread(scoped_app: Any) -> None:
    """A task that raises: the next task on the same thread runs with no user."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        failed = thread.submit(run, scoped_app, "ada", fail=True).result()
        assert isinstance(failed, ConnectionResetError)
        assert thread.submit(run, scoped_app).result() is None


@pytest.mark.parametrize("signal_name", ["task_prerun", "task_postrun"])
def test_a_failing_signal_handler_leaves_no_scope_on_the_worker_thread(
    scoped_app: Any, signal_name: str
) -> None:
    """Another task_prerun/task_postrun receiver raises: the next task runs with no user."""

    def flaky(**_: Any) -> None:
        raise ConnectionResetError("a receiver failed")

    signal = getattr(celery.signals, signal_name)
    signal.connect(flaky, weak=False)
    try:
        with ThreadPoolExecutor(max_workers=1) as thread:
            assert thread.submit(run, scoped_app, "ada").result() == "ada"
            assert thread.submit(run, scoped_app).result() is None
    finally:
        signal.disconnect(flaky)


def test_one_task_id_run_twice_at_once_ends_both_scopes(scoped_app: Any) -> None:
    """A redelivered task running twice at once (acks_late): each thread's scope ends."""
    barrier = threading.Barrier(2, timeout=30)
    with ThreadPoolExecutor(max_workers=1) as one, ThreadPoolExecutor(max_workers=1) as two:
        runs = [
            pool.submit(run, scoped_app, "ada", barrier=barrier, task_id="same-id")
            for pool in (one, two)
        ]
        assert [r.result() for r in runs] == ["ada", "ada"]
        assert [pool.submit(run, scoped_app).result() for pool in (one, two)] == [None, None]


@pytest.mark.usefixtures("workdir")
def test_a_worker_without_an_api_key_does_not_start(broker_dir: Path) -> None:
    """No API key anywhere: the worker stops at start-up naming it, before taking a task."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("COURIER_API_KEY", "COURIER_AUTH_TOKEN")
    }
    env.update(CELERY_TEST_DIR=str(broker_dir), PYTHONPATH=str(HERE.parent))
    command = [
        sys.executable, "-m", "celery", "-A", "integrations.apps.celery_app", "worker",
        "--pool", "solo", "--loglevel", "WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # it started after all: the test fails below
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert "courier_analytics.api_key: api_key is required" in stderr
