# `helm test`: the gateway answers as a device would find it. /readyz (the gateway and its stages
# are ready) must answer 200, and the OTA endpoint must hand out the device WebSocket URL.
import json
import sys
import urllib.request

base = sys.argv[1].rstrip("/")
with urllib.request.urlopen(base + "/readyz", timeout=10) as r:
    print("readyz:", r.status, r.read().decode()[:200])
request = urllib.request.Request(
    base + "/xiaozhi/ota/",
    data=json.dumps({"application": {"version": "0.0.0"}}).encode(),
    headers={"Content-Type": "application/json", "Device-Id": "02:00:00:00:00:01", "Client-Id": "helm-test"},
)
with urllib.request.urlopen(request, timeout=10) as r:
    url = json.loads(r.read())["websocket"]["url"]
print("ota websocket:", url)
sys.exit(0 if "/xiaozhi/v1" in url else 1)
