#!/usr/bin/env python3
"""How many pushes per second the git server itself accepts, without the
operator: P pushers, each on its own branch of one repository, each pushing
an empty commit in a loop for 15 s. Usage (with the env's SSH key):

  source target/env/env.sh
  export GIT_SSH_COMMAND="ssh -i $GITENV_SSH_KEY_RW -o UserKnownHostsFile=$GITENV_KNOWN_HOSTS -o IdentitiesOnly=yes"
  loadtest/scripts/git-server-ceiling.py "$(tests/env/new-repo ceiling | jq -r .ssh_url)" 1,4,16
"""
import os, subprocess, sys, time, tempfile, threading
url = sys.argv[1]  # an ssh:// or https:// URL of an empty repository you may push to
env = dict(os.environ)
def pusher(i, seconds, counts):
    d = tempfile.mkdtemp()
    subprocess.run(["git", "clone", "-q", url, d + "/c"], env=env, check=True, capture_output=True)
    c = d + "/c"
    subprocess.run(["git", "-C", c, "checkout", "-q", "-b", f"p{i}"], check=True)
    n = 0; lat = []
    end = time.time() + seconds
    while time.time() < end:
        subprocess.run(["git", "-C", c, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "--allow-empty", "-m", "x"], check=True)
        t = time.time()
        r = subprocess.run(["git", "-C", c, "push", "-q", "origin", f"p{i}"], env=env, capture_output=True)
        if r.returncode == 0:
            n += 1; lat.append(time.time() - t)
        else:
            print("fail", r.stderr[-200:], file=sys.stderr)
    counts[i] = (n, lat)
for p in [int(x) for x in sys.argv[2].split(',')]:
    counts = {}
    ts = [threading.Thread(target=pusher, args=(f"{p}-{i}", 15, counts)) for i in range(p)]
    [t.start() for t in ts]; [t.join() for t in ts]
    total = sum(v[0] for v in counts.values()); lats = sorted(l for v in counts.values() for l in v[1])
    print(f"{p} pushers: {total} pushes in 15 s = {total/15:.2f}/s; push latency p50 {lats[len(lats)//2]:.2f}s max {lats[-1]:.2f}s")
