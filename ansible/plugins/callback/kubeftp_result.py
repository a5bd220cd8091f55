# Per-host results of a kubeftp-edge run as JSON, for the watcher.
from __future__ import annotations

DOCUMENTATION = r"""
name: kubeftp_result
type: aggregate
short_description: Write per-host results of a run as JSON for the kubeftp-edge watcher
description:
  - >-
    When the environment variable KUBEFTP_RESULT_FILE names a file, writes to it at the end of
    the run (atomically, mode 0600) the document
    C({"hosts": {"<host>": {"ok": n, "changed": n, "failures": n, "unreachable": n,
    "skipped": n, "rescued": n, "config_changed": bool, "reloaded": bool,
    "runtime_updated": bool, "rolled_back": bool, "msg": "..."}}}).
    Without KUBEFTP_RESULT_FILE the plugin does nothing.
  - >-
    The counters are Ansible's own per-host stats.
  - >-
    config_changed, reloaded, runtime_updated and rolled_back come from per-host custom stats
    that the haproxy-ftp role sets with ansible.builtin.set_stats (per_host, not aggregated)
    right after the step happened, under the keys kubeftp_config_changed, kubeftp_reloaded,
    kubeftp_runtime_updated and kubeftp_rolled_back. They are facts the role states, not guesses from task names, so
    renaming a task cannot break them. A host that never got that far reports false.
  - >-
    msg is the message of the failure that stopped the host (the last failure that was not
    ignored; a rescued failure is followed by the rescue's own verdict, which names the
    original error), or the reason a host was unreachable. Empty when the host succeeded.
requirements:
  - enable in ansible.cfg (callbacks_enabled = kubeftp_result)
"""

import json
import os
import tempfile

from ansible.plugins.callback import CallbackBase

_FLAGS = {
    "config_changed": "kubeftp_config_changed",
    "reloaded": "kubeftp_reloaded",
    "runtime_updated": "kubeftp_runtime_updated",
    "rolled_back": "kubeftp_rolled_back",
}


def _message(result):
    """The human part of a task result: msg, else stderr, else a generic note."""
    res = result._result
    # A loop reports "One or more items failed"; the reason is in the failed item.
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            res = item
            break
    msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
    if not isinstance(msg, str):
        msg = json.dumps(msg, default=str)
    return msg.strip() or "task %r failed" % result._task.get_name()


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kubeftp_result"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("KUBEFTP_RESULT_FILE", "")
        self._msgs = {}

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            # Later failures win: a rescued failure is followed by the rescue's own verdict.
            self._msgs[result._host.get_name()] = _message(result)

    def v2_runner_on_unreachable(self, result):
        self._msgs[result._host.get_name()] = "unreachable: " + _message(result)

    def v2_playbook_on_stats(self, stats):
        if not self._path:
            return
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            custom = stats.custom.get(host, {}) if isinstance(stats.custom, dict) else {}
            entry = {
                "ok": s.get("ok", 0),
                "changed": s.get("changed", 0),
                "failures": s.get("failures", 0),
                "unreachable": s.get("unreachable", 0),
                "skipped": s.get("skipped", 0),
                "rescued": s.get("rescued", 0),
            }
            for field, key in _FLAGS.items():
                entry[field] = custom.get(key) is True
            failed = entry["failures"] > 0 or entry["unreachable"] > 0
            entry["msg"] = self._msgs.get(host, "") if failed else ""
            hosts[host] = entry
        self._write({"hosts": hosts})

    def _write(self, doc):
        directory = os.path.dirname(os.path.abspath(self._path))
        fd, tmp = tempfile.mkstemp(prefix=".kubeftp-result-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2, sort_keys=True)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except Exception as e:  # a broken result file must not go unnoticed
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self._display.error("kubeftp_result: cannot write %s: %s" % (self._path, e))
