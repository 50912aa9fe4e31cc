"""The top-level package re-exports the documented public API."""

import unikd
import unikd.losses


def test_all_names_resolve():
    for name in unikd.__all__:
        assert hasattr(unikd, name), name


def test_losses_are_reexported_from_the_package():
    for name in ("kd_loss", "dkd_loss", "nkd_loss", "uskd_loss", "tfkd_loss", "zipf_ls_loss", "create_loss",
                 "dist_loss", "ttm_loss", "wttm_loss", "abkd_loss", "ctkd_loss", "CTKDTemperature"):
        assert getattr(unikd, name) is getattr(unikd.losses, name)


def test_registry_names_match_documented_methods():
    assert set(unikd.list_losses()) >= {"kd", "dkd", "nkd", "uskd", "tfkd", "zipf_ls", "dist", "ttm", "wttm",
                                        "abkd", "ctkd"}
