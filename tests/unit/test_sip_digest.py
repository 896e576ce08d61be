"""HTTP Digest for SIP: RFC worked examples, the stateless challenger's verdicts, parsing, aiosipua interop."""

from __future__ import annotations

import hashlib

import pytest
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import AuthChallenge, parse_auth, stringify_auth
from hypothesis import given
from hypothesis import strategies as st

from actors.sip.digest import (
    DigestChallenge,
    DigestChallenger,
    DigestCredentials,
    DigestParseError,
    DigestUnsupported,
    Verdict,
    authorization_for,
    digest_response,
    ha1,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
)

# RFC 2617 section 3.5
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
    'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "ims.example"
URI = "sip:ims.example"
HA1_UE = ha1("ue0001", REALM, "secret")


# --------------------------------------------------------------------------- RFC examples


def test_rfc2617_worked_example() -> None:
    h1 = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert h1 == "939e7578ed9e3c518a452acee763bce9"
    response = digest_response(
        h1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", qop="auth", nc="00000001", cnonce="0a4f113b"
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_client_side_from_the_challenge() -> None:
    value = authorization_for(RFC2617_CHALLENGE, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1)
    assert parse_credentials(value) == parse_credentials(RFC2617_AUTHORIZATION)
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value and "qop=auth, nc=00000001" in value


def test_rfc2617_credentials_parse_to_the_exact_fields() -> None:
    cred = parse_credentials(RFC2617_AUTHORIZATION)
    assert cred == DigestCredentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        algorithm="MD5",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )
    assert parse_credentials(str(cred)) == cred


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    value = authorization_for(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    )
    cred = parse_credentials(value)
    assert cred.response == expected
    assert cred.algorithm == algorithm and cred.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_legacy_challenge_without_qop_uses_the_rfc2069_response() -> None:
    value = authorization_for('Digest realm="r", nonce="n"', "REGISTER", URI, "u", "p", "ignored", 1)
    cred = parse_credentials(value)
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert cred.response == md5(f"{md5('u:r:p')}:n:{md5('REGISTER:' + URI)}")
    assert cred.qop is None and cred.nc is None and cred.cnonce is None
    assert "qop" not in value and "cnonce" not in value


def test_ha1_sha256() -> None:
    assert ha1("u", "r", "p", "SHA-256") == hashlib.sha256(b"u:r:p").hexdigest()
    assert ha1("u", "r", "p", "sha-256") == ha1("u", "r", "p", "SHA-256")
    with pytest.raises(DigestUnsupported):
        ha1("u", "r", "p", "SHA-512")


# --------------------------------------------------------------------------- the challenger


def challenger(**kwargs: object) -> DigestChallenger:
    return DigestChallenger(REALM, secret=SECRET, **kwargs)  # type: ignore[arg-type]


def test_challenge_header_value_is_exact_and_deterministic() -> None:
    first = challenger().challenge(100.0)
    assert first == challenger().challenge(100.0)  # same secret, same instant, same counter
    nonce = parse_challenge(first).nonce
    assert first == f'Digest realm="ims.example", nonce="{nonce}", algorithm=MD5, qop="auth"'
    assert len(nonce) == 43
    c = challenger()
    assert c.challenge(100.0) != c.challenge(100.0)  # the counter makes each nonce unique
    assert challenger(algorithm="SHA-256").challenge(1.0).endswith('algorithm=SHA-256, qop="auth"')
    assert ", stale=true, " in c.challenge(1.0, stale=True)
    assert challenger(qop=None).challenge(1.0).endswith("algorithm=MD5")


def answer(challenge: str, password: str = "secret", method: str = "REGISTER", nc: int = 1) -> str:
    return authorization_for(challenge, method, URI, "ue0001", password, "c0ffee", nc)


def test_verify_ok_until_the_exact_stale_instant() -> None:
    c = challenger(nonce_ttl=300.0)
    auth = answer(c.challenge(1000.0))
    assert c.verify(auth, "REGISTER", HA1_UE, 1000.0) is Verdict.OK
    assert c.verify(auth, "REGISTER", HA1_UE, 1299.999) is Verdict.OK
    assert c.verify(auth, "REGISTER", HA1_UE, 1300.0) is Verdict.STALE
    assert c.verify(auth, "REGISTER", HA1_UE, 5000.0) is Verdict.STALE
    # stale only with a right response (RFC 7616 s.3.3); a wrong one is just wrong
    assert c.verify(answer(c.challenge(1000.0), "wrong"), "REGISTER", HA1_UE, 1300.0) is Verdict.BAD_RESPONSE


def test_verify_bad_response() -> None:
    c = challenger()
    challenge = c.challenge(0.0)
    assert c.verify(answer(challenge, "wrong"), "REGISTER", HA1_UE, 1.0) is Verdict.BAD_RESPONSE
    assert c.verify(answer(challenge, method="INVITE"), "REGISTER", HA1_UE, 1.0) is Verdict.BAD_RESPONSE
    assert c.verify(answer(challenge), "REGISTER", ha1("ue0002", REALM, "secret"), 1.0) is Verdict.BAD_RESPONSE
    # digest-uri must match the Request-URI when the caller checks it
    assert c.verify(answer(challenge), "REGISTER", HA1_UE, 1.0, request_uri=URI) is Verdict.OK
    assert c.verify(answer(challenge), "REGISTER", HA1_UE, 1.0, request_uri="sip:x") is Verdict.BAD_RESPONSE


def test_verify_bad_nonce() -> None:
    c = challenger()
    good = answer(c.challenge(10.0))
    nonce = parse_credentials(good).nonce
    tampered = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    forged = authorization_for(
        f'Digest realm="{REALM}", nonce="{tampered}", qop="auth"', "REGISTER", URI, "ue0001", "secret", "c", 1
    )
    assert c.verify(forged, "REGISTER", HA1_UE, 11.0) is Verdict.BAD_NONCE
    other_secret = DigestChallenger(REALM, secret=b"x" * 32)
    assert other_secret.verify(good, "REGISTER", HA1_UE, 11.0) is Verdict.BAD_NONCE
    other_realm = DigestChallenger("other.example", secret=SECRET)
    assert other_realm.verify(good, "REGISTER", HA1_UE, 11.0) is Verdict.BAD_NONCE
    other_algorithm = challenger(algorithm="SHA-256")
    assert other_algorithm.verify(good, "REGISTER", HA1_UE, 11.0) is Verdict.BAD_NONCE
    assert c.verify(good, "REGISTER", HA1_UE, 9.0) is Verdict.BAD_NONCE  # issued in our future
    not_ours = authorization_for(f'Digest realm="{REALM}", nonce="abc", qop="auth"', "REGISTER", URI, "ue0001", "secret", "c", 1)
    assert c.verify(not_ours, "REGISTER", HA1_UE, 11.0) is Verdict.BAD_NONCE


def test_verify_opaque_must_be_echoed() -> None:
    c = challenger(opaque="op4que")
    challenge = c.challenge(0.0)
    assert 'opaque="op4que"' in challenge
    assert c.verify(answer(challenge), "REGISTER", HA1_UE, 1.0) is Verdict.OK
    without = answer(challenge.replace(', opaque="op4que"', ""))
    assert c.verify(without, "REGISTER", HA1_UE, 1.0) is Verdict.BAD_NONCE


def test_verify_malformed() -> None:
    c = challenger()
    for value in ("", "Digest", "Basic dXNlcjpwYXNz", 'Digest username="ue0001", realm="ims.example', "garbage ,,, ="):
        assert c.verify(value, "REGISTER", HA1_UE, 1.0) is Verdict.MALFORMED, value


def test_qop_policy() -> None:
    c = challenger()  # qop=auth required
    legacy = authorization_for(c.challenge(0.0).replace(', qop="auth"', ""), "REGISTER", URI, "ue0001", "secret", "c", 1)
    assert c.verify(legacy, "REGISTER", HA1_UE, 1.0) is Verdict.BAD_RESPONSE
    legacy_server = challenger(qop=None)
    challenge = legacy_server.challenge(0.0)
    assert legacy_server.verify(answer(challenge), "REGISTER", HA1_UE, 1.0) is Verdict.OK


def test_sha256_end_to_end() -> None:
    c = challenger(algorithm="SHA-256")
    auth = answer(c.challenge(5.0))
    assert "algorithm=SHA-256" in auth
    assert c.verify(auth, "REGISTER", ha1("ue0001", REALM, "secret", "SHA-256"), 6.0) is Verdict.OK
    assert c.verify(auth, "REGISTER", HA1_UE, 6.0) is Verdict.BAD_RESPONSE  # MD5 HA1 for a SHA-256 answer


def test_nonce_counts_are_formatted_and_checked() -> None:
    c = challenger()
    challenge = c.challenge(0.0)
    auth = answer(challenge, nc=255)
    assert "nc=000000ff" in auth
    assert c.verify(auth, "REGISTER", HA1_UE, 1.0) is Verdict.OK
    for bad in (0, -1, 2**32, True, 1.5):
        with pytest.raises(ValueError):
            answer(challenge, nc=bad)  # type: ignore[arg-type]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, nonce_ttl=0)
    with pytest.raises(DigestUnsupported):
        DigestChallenger(REALM, qop="auth-int")
    with pytest.raises(DigestUnsupported):
        DigestChallenger(REALM, algorithm="SHA-1")
    assert DigestChallenger(REALM).challenge(0.0) != DigestChallenger(REALM).challenge(0.0)  # random secrets


# --------------------------------------------------------------------------- parsing


def test_parser_handles_quoted_commas_escapes_and_case() -> None:
    scheme, params = parse_auth_params(
        'digest  Realm = "a, b=c" ,, nonce="x\\"y\\\\z",algorithm=md5 ,qop="auth,auth-int", stale=TRUE,'
    )
    assert scheme == "digest"
    assert params == {"realm": "a, b=c", "nonce": 'x"y\\z', "algorithm": "md5", "qop": "auth,auth-int", "stale": "TRUE"}
    challenge = parse_challenge('digest  Realm = "a, b=c" ,, nonce="x\\"y\\\\z",algorithm=md5 ,qop="auth,auth-int", stale=TRUE')
    assert challenge == DigestChallenge(realm="a, b=c", nonce='x"y\\z', algorithm="MD5", qop=("auth", "auth-int"), stale=True)
    assert parse_challenge(str(challenge)) == challenge


def test_parser_keeps_unknown_parameters() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", domain="sip:ims.example", charset=UTF-8')
    assert challenge.extra == {"domain": "sip:ims.example", "charset": "UTF-8"}
    assert challenge.qop == () and challenge.algorithm == "MD5"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest realm="r', "unterminated quoted string"),
        ('Digest realm="r", nonce', "parameter 'nonce' has no value"),
        ("Digest realm=", "parameter 'realm' has an empty or invalid value"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", realm="s", nonce="n"', "parameter 'realm' appears twice"),
        ('Digest nonce="n"', "challenge without realm"),
        ('Digest realm="r"', "challenge without nonce"),
        ('Digest realm="r", nonce="n", stale=maybe', "stale must be true or false"),
        ('Digest realm="r", nonce="n", qop=""', "empty qop list"),
        ('Digest realm="r\nx", nonce="n"', "control character"),
        ("", "missing auth scheme"),
        ('Digest@ realm="r"', "after the auth scheme"),
        ('Digest realm="r", =x', "expected a parameter name"),
        ("Digest " + "a" * 9000, "longer than 8192"),
    ],
)
def test_malformed_challenges_raise_precise_errors(value: str, reason: str) -> None:
    with pytest.raises(DigestParseError, match=reason) as info:
        parse_challenge(value)
    assert isinstance(info.value, ValueError) and reason in info.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest username="u", realm="r", nonce="n", uri="x"', "credentials without response"),
        ('Digest username="u", realm="r", nonce="n", uri="x", response="ab", qop=auth', "without nc or cnonce"),
        ('Digest username="u", realm="r", nonce="n", uri="x", response="ab", qop=auth, nc=1, cnonce="c"', "8 hex digits"),
        ('Digest username="u", realm="r", nonce="n", uri="x", response="zz"', "not a hex digest"),
    ],
)
def test_malformed_credentials_raise_precise_errors(value: str, reason: str) -> None:
    with pytest.raises(DigestParseError, match=reason):
        parse_credentials(value)


def test_unsupported_but_well_formed() -> None:
    with pytest.raises(DigestUnsupported, match="not Digest"):
        parse_challenge('Basic realm="r"')
    with pytest.raises(DigestUnsupported, match="algorithm"):
        parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-512-256-sess')
    with pytest.raises(DigestUnsupported, match="only qop"):
        authorization_for('Digest realm="r", nonce="n", qop="auth-int"', "GET", "/", "u", "p", "c", 1)
    with pytest.raises(DigestUnsupported, match="qop"):
        parse_credentials('Digest username="u", realm="r", nonce="n", uri="x", response="ab", qop=auth-int, nc=00000001, cnonce="c"')


@given(st.text(max_size=200))
def test_parser_only_ever_raises_digest_errors(text: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(text)
        except (DigestParseError, DigestUnsupported):
            pass


_quotable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)


@given(username=_quotable, realm=_quotable, uri=_quotable)
def test_credentials_round_trip_any_quoted_text(username: str, realm: str, uri: str) -> None:
    cred = DigestCredentials(username, realm, "n", uri, "ab12", qop="auth", nc="00000001", cnonce='c,"\\')
    assert parse_credentials(str(cred)) == cred


# --------------------------------------------------------------------------- aiosipua interop


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_aiosipua_answers_our_challenge(algorithm: str) -> None:
    c = challenger(algorithm=algorithm, opaque="o")
    challenge = parse_auth(c.challenge(50.0))
    credentials = build_credentials(SipDigestAuth("ue0001", "secret"), challenge, "REGISTER", URI, cnonce="abc")
    assert credentials is not None
    value = stringify_auth(credentials)
    assert c.verify(value, "REGISTER", ha1("ue0001", REALM, "secret", algorithm), 51.0) is Verdict.OK
    assert c.verify(value, "REGISTER", ha1("ue0001", REALM, "nope", algorithm), 51.0) is Verdict.BAD_RESPONSE


@pytest.mark.parametrize("qop", ['qop="auth", ', ""])
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_we_answer_aiosipua_challenges_like_aiosipua(algorithm: str, qop: str) -> None:
    their_challenge = stringify_auth(
        AuthChallenge("Digest", {"realm": REALM, "nonce": "n0nce", "algorithm": algorithm, "opaque": "op"})
    )
    if qop:
        their_challenge = their_challenge.replace("Digest ", f"Digest {qop}")
    ours = authorization_for(their_challenge, "INVITE", "sip:ue0002@ims.example", "ue0001", "secret", "cn", 3)
    theirs = build_credentials(
        SipDigestAuth("ue0001", "secret"),
        parse_auth(their_challenge),
        "INVITE",
        "sip:ue0002@ims.example",
        nonce_count=3,
        cnonce="cn",
    )
    assert theirs is not None
    assert parse_auth(ours, credentials=True).params == theirs.params
    assert parse_credentials(stringify_auth(theirs)) == parse_credentials(ours)
