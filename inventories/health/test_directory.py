"""Directory (role identity): the directory service runs and listens on its port, 8389."""


def test_directory_service_is_running(host):
    assert host.service("directory").is_running, "the directory service is not running"


def test_directory_listens_on_8389(host):
    assert host.socket("tcp://0.0.0.0:8389").is_listening, "nothing listens on TCP 8389"
