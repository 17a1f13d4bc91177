"""EMR application (role emr-app): its stand-in service answers HTTP 200 with its page."""

FETCH = ("import urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8080/', timeout=5); "
         "print(r.status); print(r.read().decode())")


def test_emr_app_service_is_running(host):
    assert host.service("emr-app").is_running, "emr-app is not running"


def test_emr_app_answers_http_200(host):
    answer = host.run("python3 -c %s", FETCH)
    assert answer.rc == 0, f"no HTTP answer on 8080: {answer.stderr.strip()[-200:]}"
    status, _, body = answer.stdout.partition("\n")
    assert status.strip() == "200", f"HTTP {status.strip()}"
    assert body.strip().startswith("emr-app on "), body
