"""Emergency department triage (role ed-triage): its service runs and listens on 8081."""


def test_triage_service_is_running_and_enabled(host):
    service = host.service("triage")
    assert service.is_running, "triage is not running"
    assert service.is_enabled, "triage would not start at the next boot"


def test_triage_listens_on_8081(host):
    assert host.socket("tcp://0.0.0.0:8081").is_listening, "nothing listens on TCP 8081"
