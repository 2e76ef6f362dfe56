"""Generates the long patterns of the policy part of
charts/sandbox-operator/values.schema.json: allowedCapabilities (the 41
Linux capabilities with the operator's normalisation), whole-byte amounts
(memory, ephemeral-storage), and the IPv6 spelling of the egress deny list.
`python3 scripts/chart-schema/gen.py` prints them; paste a changed one into
the schema. The chart tests (`chart::render_options`) check the schema's
verdicts against the operator's own on generated samples, so a pattern that
drifts from the operator fails them."""
from fractions import Fraction
from collections import defaultdict
import json

CAPS = """CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
CHECKPOINT_RESTORE""".split()
assert len(CAPS) == 41
VOLUME_TYPES = """awsElasticBlockStore azureDisk azureFile cephfs cinder configMap csi
downwardAPI emptyDir ephemeral fc flexVolume flocker gcePersistentDisk gitRepo glusterfs
hostPath image iscsi nfs persistentVolumeClaim photonPersistentDisk portworxVolume
projected quobyte rbd scaleIO secret storageos vsphereVolume""".split()
assert len(VOLUME_TYPES) == 30

# Rust's char::is_whitespace (Unicode White_Space), which str::trim strips.
WS = r"[\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

def capability_pattern():
    # Longest names first is not needed (anchored), but keep the table order.
    return "^" + WS + "*(?i:(cap_)?(" + "|".join(CAPS) + "))" + WS + "*$"

# Go's (?i) also folds these two non-ASCII letters onto k and s; the
# operator upper-cases ASCII only.
NON_ASCII_FOLDS = r"[\x{17F}\x{212A}]"

HUGEPAGES = (r"^hugepages-([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]+\.[0-9]*[1-9][0-9]*)"
             r"([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
QUALIFIED = (r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
             r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
QUALIFIED_DOMAIN_LENGTH = r"^[-a-z0-9.]{1,253}/"
NOT_EXTENDED = r"^hugepages-|kubernetes\.io/"

QUANTITY = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"

def dec(fr):
    s = ""
    while fr:
        fr *= 10
        d = int(fr)
        s += str(d)
        fr -= d
    return s

def trie_regex(words):
    root = {}
    for w in words:
        n = root
        for c in w:
            n = n.setdefault(c, {})
        n[""] = {}
    def rx(node):
        end = "" in node
        by = defaultdict(list)
        for c, child in sorted(node.items()):
            if c:
                by[rx(child)].append(c)
        alts = []
        for r, cs in by.items():
            alts.append((cs[0] if len(cs) == 1 else "[" + "".join(cs) + "]") + r)
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"
        if end:
            if len(body) > 1 and not (len(alts) > 1):
                body = "(" + body + ")"
            body += "?"
        return body
    return rx(root)

def whole_bytes_pattern():
    """Quantities (already matching QUANTITY) the operator takes for a whole
    number of bytes: exact for decimal suffixes and no suffix (the operator
    rounds a fraction of a nano-unit up, so a fraction less than a
    billionth of a byte below a whole number counts as whole); exact for
    binary suffixes whose fraction has at most 9 significant digits (a
    multiple of 1/512); a longer fraction with a binary suffix and any
    exponent are left to the operator."""
    alts = []
    nz = "[0-9]*[1-9][0-9]*"
    for suffix, s in [("", 0), ("k", 3), ("M", 6), ("G", 9), ("T", 12), ("P", 15), ("E", 18)]:
        exact = "0*" if s == 0 else "[0-9]{0,%d}0*" % s
        edge = ("" if s == 0 else "[0-9]{%d}" % s) + "9{9}" + nz
        alts.append(r"[0-9]*(\.(%s|%s))?%s" % (exact, edge, suffix))
    for suffix, t in [("m", 3), ("u", 6), ("n", 9)]:
        exact = r"([0-9]*0{%d}|0*)(\.0*)?" % t
        edge = r"[0-9]*9{%d}\.%s%s" % (t, ("9{%d}" % (9 - t)) if t < 9 else "", nz)
        alts.append("(%s|%s)%s" % (exact, edge, suffix))
    alts.append(r"[0-9]*(\.[0-9]*)?[eE][+-]?[0-9]+")
    fractions = trie_regex(sorted(dec(Fraction(j, 512)) for j in range(1, 512)))
    alts.append(r"[0-9]*(\.(%s)?0*|\.[0-9]{9,}[1-9]0*)?[KMGTPE]i" % fractions)
    return r"^\+?(" + "|".join(alts) + ")$"

G = "(0|[1-9a-f][0-9a-f]{0,3})"
H = "[0-9a-f]+"

def ipv6_structure():
    """Lower-case hex groups without leading zeros; '::' stands for at
    least two groups."""
    forms = ["(%s:){7}%s" % (G, G)]
    for a in range(0, 7):
        left = "" if a == 0 else ("%s" % G if a == 1 else "(%s:){%d}%s" % (G, a - 1, G))
        b = 6 - a
        if b == 0:
            right = ""
        elif b == 1:
            right = "(%s)?" % G
        else:
            right = "((%s:){0,%d}%s)?" % (G, b - 1, G)
        forms.append(left + "::" + right)
    return "^(" + "|".join(forms) + ")/([1-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$"

def ipv6_not_shortest():
    """What the structure lets through that is not Rust's (RFC 5952)
    spelling or is an IPv4-mapped address: a run of two zero groups left
    uncompressed with no '::', a zero group next to '::', with '::' for
    k groups a run of k zero groups before it or k+1 after it (the
    leftmost longest run is the one compressed), and ::ffff:x:y."""
    simple = "|".join([
        r"^(%s:)*0:0(:%s)*/" % (H, H),
        r"(^|:)0::|::0(:|/)",
        r"^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}/",
    ])
    runs = []
    for k in (2, 3):
        e = 8 - k
        count = r"^:*(%s:+){%d}%s:*/" % (H, e - 1, H)
        left = r"^(%s:)*(0:){%d}(%s:)*:" % (H, k, H)
        right = r"::(%s:)*0(:0){%d}(:%s)*/" % (H, k, H)
        runs.append({"allOf": [{"pattern": count}, {"pattern": left + "|" + right}]})
    return {"anyOf": [{"pattern": simple}] + runs}

if __name__ == "__main__":
    print(json.dumps({
        "capability": capability_pattern(),
        "whole": whole_bytes_pattern(),
        "ipv6": ipv6_structure(),
        "ipv6_not": ipv6_not_shortest(),
    }, indent=1))
    print(len(whole_bytes_pattern()))
