// The --kv specification grammar (examples/common/kv_spec.hpp).

#include <catch2/catch.hpp>
#include <string>

#include "common/kv_spec.hpp"

using qaq::examples::kv_spec;
using qaq::examples::parse_kv_spec;

TEST_CASE("kv spec: fp32 and fp16", "[kv_spec]") {
    const kv_spec exact = parse_kv_spec("fp32");
    CHECK(exact.exact);
    const kv_spec half = parse_kv_spec("fp16");
    CHECK_FALSE(half.exact);
    CHECK_FALSE(half.keys.enabled);
    CHECK_FALSE(half.values.enabled);
    CHECK(half.keys.role == qaq::cache_role::key);
    CHECK(half.values.role == qaq::cache_role::value);
    CHECK(qaq::examples::describe(half) == "keys: fp16; values: fp16");
}

TEST_CASE("kv spec: uniform", "[kv_spec]") {
    const kv_spec u = parse_kv_spec("uniform:4");
    for (const auto* c : {&u.keys, &u.values}) {
        CHECK(c->enabled);
        CHECK(c->bits == qaq::bits_kind::fixed);
        CHECK(c->fixed_bits == 4);
        CHECK(c->codec == qaq::codec_kind::uniform_zero_point);
        CHECK(c->level == qaq::group_level::head);
        CHECK(c->outlier_ratio == 0.0);
        CHECK(c->precision == qaq::storage_precision::fp16);
    }
    CHECK(u.keys.role == qaq::cache_role::key);

    const kv_spec v = parse_kv_spec("uniform:bits=3,group=32,outliers=0.02,codec=mean-centred,symmetric,precision=fp32");
    CHECK(v.values.fixed_bits == 3);
    CHECK(v.values.level == qaq::group_level::sub_head);
    CHECK(v.values.group_dims == 32);
    CHECK(v.values.outlier_ratio == 0.02);
    CHECK(v.values.codec == qaq::codec_kind::uniform_mean_centred);
    CHECK(v.values.symmetric);
    CHECK(v.values.precision == qaq::storage_precision::fp32);

    const kv_spec w = parse_kv_spec("uniform:key_bits=8,value_bits=2");
    CHECK(w.keys.fixed_bits == 8);
    CHECK(w.values.fixed_bits == 2);
    CHECK(parse_kv_spec("uniform:4,codec=normal").keys.codec == qaq::codec_kind::normal);
}

TEST_CASE("kv spec: qaq", "[kv_spec]") {
    const kv_spec q = parse_kv_spec("qaq");
    CHECK(q.keys.bits == qaq::bits_kind::key_query_norm);
    CHECK(q.values.bits == qaq::bits_kind::value_attention);
    CHECK(q.keys.bits_min == 2);
    CHECK(q.keys.bits_max == 8);
    CHECK(q.values.window == 5);
    CHECK(q.values.outlier_ratio == 0.01);
    CHECK(q.keys.target_error == 0.001);
    CHECK(q.values.target_error == 0.1);
    CHECK(q.key_q_norm_auto);

    const kv_spec r = parse_kv_spec("qaq:key_eps=0.1,value_eps=0.05,bits=3-6,window=3,outliers=0.02,q_norm=40");
    CHECK(r.keys.target_error == 0.1);
    CHECK(r.values.target_error == 0.05);
    CHECK(r.keys.bits_min == 3);
    CHECK(r.values.bits_max == 6);
    CHECK(r.keys.window == 3);
    CHECK(r.values.window == 3);
    CHECK(r.keys.outlier_ratio == 0.02);
    CHECK(r.keys.q_norm == 40.0);
    CHECK_FALSE(r.key_q_norm_auto);

    const kv_spec s = parse_kv_spec("qaq:eps=0.3,q_norm=auto");
    CHECK(s.keys.target_error == 0.3);
    CHECK(s.values.target_error == 0.3);
    CHECK(s.key_q_norm_auto);
}

TEST_CASE("kv spec: per role", "[kv_spec]") {
    const kv_spec a = parse_kv_spec("k:uniform:8/v:uniform:2");
    CHECK(a.keys.fixed_bits == 8);
    CHECK(a.values.fixed_bits == 2);
    CHECK(a.keys.role == qaq::cache_role::key);
    CHECK(a.values.role == qaq::cache_role::value);

    const kv_spec b = parse_kv_spec("v:qaq:eps=0.2,bits=0-4/k:fp16");
    CHECK_FALSE(b.keys.enabled);
    CHECK(b.values.bits == qaq::bits_kind::value_attention);
    CHECK(b.values.target_error == 0.2);
    CHECK(b.values.bits_min == 0);
    CHECK_FALSE(b.key_q_norm_auto);

    const kv_spec c = parse_kv_spec("k:qaq:q_norm=12.5,eps=0.05/v:uniform:4");
    CHECK(c.keys.q_norm == 12.5);
    CHECK(c.keys.target_error == 0.05);
    CHECK(c.values.fixed_bits == 4);
}

TEST_CASE("kv spec: errors name the bad token and what is accepted", "[kv_spec]") {
    const auto fails_with = [](const std::string& spec, const std::string& text) {
        INFO(spec);
        CHECK_THROWS_WITH(parse_kv_spec(spec), Catch::Contains(text));
    };
    fails_with("", "empty");
    fails_with("int8", "bad token 'int8'");
    fails_with("int8", "accepted: fp32 (whole cache only), fp16, uniform, qaq");
    fails_with("uniform", "needs a bit width");
    fails_with("uniform:x", "bad token 'x'");
    fails_with("uniform:x", "accepted:");
    fails_with("uniform:17", "bits must be 0..16");
    fails_with("uniform:4,colour=red", "unknown option 'colour'");
    fails_with("uniform:4,outliers=1.5", "outliers must be in [0, 1)");
    fails_with("uniform:4,outliers=abc", "'abc' is not a number");
    fails_with("uniform:4,codec=fancy", "codec 'fancy'; accepted: zero-point, mean-centred, normal");
    fails_with("qaq:codec=normal", "normal needs fixed bits");
    fails_with("uniform:4,precision=fp8", "accepted: fp16, fp32");
    fails_with("uniform:4,,outliers=0.1", "empty option");
    fails_with("qaq:bits=4", "bit range bits=MIN-MAX");
    fails_with("qaq:bits=6-2", "MIN <= MAX");
    fails_with("qaq:eps=-1", "eps must be positive");
    fails_with("qaq:window=0", "window must be >= 1");
    fails_with("qaq:eps", "needs a value");
    fails_with("fp16:bits=4", "fp16 takes no options");
    fails_with("k:fp32/v:fp16", "whole-cache float32 baseline");
    fails_with("k:uniform:4", "needs both roles");
    fails_with("k:uniform:4/k:uniform:2", "bad token 'k:uniform:2'");
    fails_with("k:uniform:4/v:uniform:2/v:fp16", "exactly two");
    fails_with("k:uniform:key_bits=4/v:fp16", "key_/value_ prefixes belong to the shared form");
    fails_with("k:uniform:4/v:qaq:q_norm=3", "q_norm belongs to the key cache");
    fails_with("uniform:4,group=0", "group must be >= 1");
    fails_with("uniform:key_bits=4", "the value cache is uniform but has no bits");
}
