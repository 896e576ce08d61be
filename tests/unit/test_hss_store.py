"""The HSS data model: subscribers from config, HA1-only credentials, registrations with exact expiry."""

from __future__ import annotations

import dataclasses

import pytest

from actors.sip.digest import ha1
from nf_modules.hss_store import HssConfig, HssStore, UnknownSubscriber, normalize_impu

A = "sip:ue0001@ims.example"
C1 = "sip:ue0001@127.0.0.1:40001"
C2 = "sip:ue0001@127.0.0.1:40002"


@pytest.fixture(scope="module")
def default_store() -> HssStore:
    return HssStore()


def small(**options: object) -> HssStore:
    return HssStore(HssConfig.from_options({"users": 3, **options}))


# --------------------------------------------------------------------------- subscribers


def test_default_subscribers(default_store: HssStore) -> None:
    assert len(default_store) == 1000
    assert "sip:ue0001@ims.example" in default_store and "ue1000" in default_store
    assert "ue0000" not in default_store and "ue1001" not in default_store and 17 not in default_store
    vector = default_store.auth_vector("ue0042")
    assert vector == {
        "impu": "sip:ue0042@ims.example",
        "impi": "ue0042@ims.example",
        "username": "ue0042",
        "realm": "ims.example",
        "algorithm": "MD5",
        "ha1": ha1("ue0042", "ims.example", "secret"),
    }
    assert default_store.auth_vector("ue0042", "sha-256")["ha1"] == ha1("ue0042", "ims.example", "secret", "SHA-256")


def test_the_password_is_not_stored(default_store: HssStore) -> None:
    store = small(password="hunter2-plain")
    assert store.auth_vector("ue0001")["ha1"] == ha1("ue0001", "ims.example", "hunter2-plain")
    assert "hunter2" not in repr(vars(store))
    assert "hunter2" not in repr(dataclasses.asdict(store.subscriber("ue0001")))


def test_configured_format_count_domain_realm_and_extra() -> None:
    store = HssStore(
        HssConfig.from_options(
            {
                "users": 2,
                "first": 7,
                "user_format": "user-{}",
                "password": "pw",
                "realm": "auth.example",
                "extra": [{"user": "alice", "password": "wonder", "domain": "Other.Example"}],
            },
            domain="home.example",
        )
    )
    assert len(store) == 3
    assert store.subscriber("user-7").impu == "sip:user-7@home.example"
    assert store.subscriber("sip:user-8@home.example").impi == "user-8@home.example"
    assert "user-9" not in store
    assert store.auth_vector("user-7")["ha1"] == ha1("user-7", "auth.example", "pw")
    assert store.auth_vector("sip:alice@other.example")["ha1"] == ha1("alice", "auth.example", "wonder")


@pytest.mark.parametrize(
    "options",
    [
        {"users": -1},
        {"users": "10"},
        {"users": True},
        {"user_format": "ue{:04d}{}"},
        {"user_format": 5},
        {"colour": "blue"},
        {"extra": [{"user": "x"}]},
        {"extra": "x"},
    ],
)
def test_bad_config_is_a_value_error(options: dict) -> None:
    with pytest.raises(ValueError):
        HssConfig.from_options(options)


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("sip:ue0001@ims.example", A),
        ("SIP:ue0001@IMS.Example", A),
        ("sips:ue0001@ims.example", A),
        ("<sip:ue0001@ims.example;transport=udp>", A),
        ('"UE one" <sip:ue0001@ims.example:5060>', A),
        ("sip:ue0001:pw@ims.example?Subject=x", A),
        ("ue0001@ims.example", A),
        ("ue0001", A),
        ("  ue0001  ", A),
        ("sip:UE0001@ims.example", "sip:UE0001@ims.example"),  # the user part is case-sensitive
    ],
)
def test_identities_normalize(identity: str, expected: str) -> None:
    assert normalize_impu(identity, "ims.example") == expected


@pytest.mark.parametrize("identity", ["", "tel:+123", "sip:@ims.example", "<sip:a@b", "a b@c", "sip:ue0001@"])
def test_bad_identities(identity: str) -> None:
    with pytest.raises(ValueError):
        normalize_impu(identity, "ims.example")


def test_unknown_subscribers(default_store: HssStore) -> None:
    for identity in ("ue1001", "sip:ue0001@other.example", "tel:+1", "sip:UE0001@ims.example"):
        with pytest.raises(UnknownSubscriber) as info:
            default_store.auth_vector(identity)
        assert isinstance(info.value, LookupError) and info.value.identity == identity
    with pytest.raises(ValueError):
        default_store.auth_vector(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        default_store.auth_vector("ue0001", "SHA-1")


# --------------------------------------------------------------------------- registrations


def test_binding_lives_until_the_exact_expiry_instant() -> None:
    store = small()
    granted, bindings = store.register("ue0001", C1, 60, 100.0, path=["<sip:pcscf@127.0.0.1:5060;lr>"], pcscf="127.0.0.1:5060")
    assert granted == 60
    assert [b.as_dict(100.0) for b in bindings] == [
        {"contact": C1, "expires": 60, "path": ["<sip:pcscf@127.0.0.1:5060;lr>"], "pcscf": "127.0.0.1:5060"}
    ]
    assert [b.contact for b in store.lookup(A, 159.999)] == [C1]
    assert store.lookup(A, 159.999)[0].remaining(159.999) == 1  # rounded up
    assert store.lookup(A, 160.0) == []
    assert store.serving_pcscf(A, 160.0) is None
    assert store.list_registered(159.0) == [A]
    assert store.list_registered(160.0) == []
    assert store.stats(160.0)["expired"] == 1


def test_reregistration_extends_and_stale_heap_entries_do_not_expire_it() -> None:
    store = small()
    store.register(A, C1, 60, 0.0)
    store.register(A, C1, 60, 50.0)  # refreshed: now expires at 110
    assert store.next_expiry() == 60.0  # the old deadline is still in the heap
    assert store.purge(60.0) == 0
    assert [b.contact for b in store.lookup(A, 109.0)] == [C1]
    assert store.lookup(A, 110.0) == []
    assert store.purge(110.0) == 1
    assert store.counters["register"] == 1 and store.counters["reregister"] == 1


def test_several_contacts_expires_zero_and_serving_pcscf() -> None:
    store = small()
    store.register(A, C1, 100, 0.0, pcscf="pcscf-a")
    store.register(A, C2, 30, 1.0, pcscf="pcscf-b")
    assert [b.contact for b in store.lookup(A, 2.0)] == [C1, C2]
    assert store.serving_pcscf(A, 2.0) == "pcscf-b"  # the newest binding's
    assert store.serving_pcscf(A, 31.0) == "pcscf-a"  # C2 expired at 31.0
    store.register(A, C2, 30, 40.0, pcscf="pcscf-b")
    granted, bindings = store.register(A, C2, 0, 41.0)  # expires=0 removes that contact
    assert granted == 0 and [b.contact for b in bindings] == [C1]
    store.register(A, C1, 100, 42.0, pcscf=None)
    assert store.serving_pcscf(A, 43.0) is None


def test_expiry_is_capped_by_max_expires() -> None:
    store = small(max_expires=3600)
    granted, [binding] = store.register(A, C1, 100_000, 10.0)
    assert granted == 3600 and binding.expires_at == 3610.0
    granted, _ = store.register(A, C2, 0.5, 10.0)
    assert granted == 1  # a fractional expiry is reported rounded up


def test_deregister_one_all_and_star() -> None:
    store = small()
    store.register(A, C1, 60, 0.0)
    store.register(A, C2, 60, 0.0)
    assert store.deregister(A, 1.0, C1) == 1
    assert store.deregister(A, 1.0, C1) == 0
    assert store.deregister(A, 1.0) == 1
    assert store.list_registered(1.0) == []
    store.register(A, C1, 60, 2.0)
    store.register("ue0002", C2, 60, 2.0)
    assert store.deregister(A, 3.0, " * ") == 1
    assert store.list_registered(3.0) == ["sip:ue0002@ims.example"]


@pytest.mark.parametrize(
    ("contact", "expires", "path", "pcscf"),
    [
        ("", 60, (), None),
        ("   ", 60, (), None),
        (5, 60, (), None),
        (C1, -1, (), None),
        (C1, float("inf"), (), None),
        (C1, float("nan"), (), None),
        (C1, True, (), None),
        (C1, "60", (), None),
        (C1, 60, [1], None),
        (C1, 60, (), 5060),
    ],
)
def test_bad_register_arguments(contact: object, expires: object, path: object, pcscf: object) -> None:
    store = small()
    with pytest.raises(ValueError):
        store.register(A, contact, expires, 0.0, path=path, pcscf=pcscf)  # type: ignore[arg-type]
    assert store.list_registered(0.0) == []


def test_register_for_an_unknown_user() -> None:
    store = small()
    with pytest.raises(UnknownSubscriber):
        store.register("ue0009", C1, 60, 0.0)
    with pytest.raises(UnknownSubscriber):
        store.lookup("ue0009", 0.0)
    assert store.counters["not_found"] == 2


def test_stats() -> None:
    store = small()
    store.register(A, C1, 60, 0.0)
    store.register(A, C2, 10, 0.0)
    store.register("ue0002", C1, 60, 0.0)
    store.auth_vector("ue0003")
    assert store.stats(5.0) == {"subscribers": 3, "registered": 2, "bindings": 3, "register": 3, "auth_vector": 1, "expired": 0}
    assert store.stats(10.0)["bindings"] == 2


def test_a_refresh_keeps_its_place_so_a_later_registration_stays_newest() -> None:
    """The emulated UE refreshing ue0001 must not take it back from an external UA."""
    store = small()
    store.register("ue0001", "sip:ue0001@pool", 600, now=0.0)
    store.register("ue0001", "sip:ue0001@softphone", 600, now=10.0)
    store.register("ue0001", "sip:ue0001@pool", 600, now=480.0)  # the pool's refresh
    assert [b.contact for b in store.lookup("ue0001", 481.0)] == ["sip:ue0001@pool", "sip:ue0001@softphone"]
    store.register("ue0001", "sip:ue0001@softphone", 0, now=500.0)  # the softphone leaves
    assert [b.contact for b in store.lookup("ue0001", 501.0)] == ["sip:ue0001@pool"]
