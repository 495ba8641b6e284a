#pragma once
// Compile-time checks that a type can play a policy role. An unmatched
// combination fails with a static_assert that names what is missing.

#include <cstdint>
#include <type_traits>
#include <utility>

#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace traits {

template <class...>
inline constexpr bool dependent_false = false;

#define QAQ_DEFINE_FLAG_TRAIT(trait, flag)                                                   \
    template <class T, class = void>                                                         \
    struct trait : std::false_type {};                                                       \
    template <class T>                                                                       \
    struct trait<T, std::void_t<decltype(T::flag)>> : std::bool_constant<bool(T::flag)> {}; \
    template <class T>                                                                       \
    inline constexpr bool trait##_v = trait<T>::value;

QAQ_DEFINE_FLAG_TRAIT(is_bits_policy, is_bits_policy)
QAQ_DEFINE_FLAG_TRAIT(is_outlier_policy, is_outlier_policy)
QAQ_DEFINE_FLAG_TRAIT(is_codec, is_codec)
QAQ_DEFINE_FLAG_TRAIT(is_backend, is_backend)

#undef QAQ_DEFINE_FLAG_TRAIT

// The members each role's users call (docs/policies.md).
template <class T, class = void>
struct has_bits_members : std::false_type {};
template <class T>
struct has_bits_members<T, std::void_t<decltype(bool(T::needs_attention)), decltype(bool(T::adaptive)),
                                       decltype(int(std::declval<const T&>().bits_min())),
                                       decltype(int(std::declval<const T&>().bits_max())),
                                       decltype(int(std::declval<const T&>().window())),
                                       decltype(int(std::declval<const T&>()(std::declval<const bits::context&>())))>>
    : std::true_type {};
template <class T>
inline constexpr bool has_bits_members_v = has_bits_members<T>::value;

template <class T, class = void>
struct has_outlier_members : std::false_type {};
template <class T>
struct has_outlier_members<
    T, std::void_t<decltype(double(std::declval<const T&>().ratio())),
                   decltype(std::int64_t(std::declval<const T&>().mark(std::declval<const float*>(), std::int64_t{},
                                                                         std::declval<std::uint8_t*>(),
                                                                         std::declval<float*>())))>> : std::true_type {};
template <class T>
inline constexpr bool has_outlier_members_v = has_outlier_members<T>::value;

template <class T, class = void>
struct has_codec_members : std::false_type {};
template <class T>
struct has_codec_members<
    T, std::void_t<decltype(bool(T::needs_std)), decltype(bool(T::supports_adaptive_bits)),
                   decltype(storage_precision(std::declval<const T&>().precision)),
                   decltype(int(std::declval<const T&>().stored_parameter_count())),
                   decltype(float(std::declval<const T&>().range(std::declval<const group_statistics&>()))),
                   decltype(codec_parameters(std::declval<const T&>().fit(std::declval<const group_statistics&>(), 0))),
                   decltype(std::declval<const T&>().store(codec_parameters{}, std::declval<float*>())),
                   decltype(codec_parameters(std::declval<const T&>().load(std::declval<const float*>(), 0))),
                   decltype(std::uint32_t(std::declval<const T&>().encode(0.0f, codec_parameters{}, 0))),
                   decltype(float(std::declval<const T&>().decode(0u, codec_parameters{}, 0)))>> : std::true_type {};
template <class T>
inline constexpr bool has_codec_members_v = has_codec_members<T>::value;

}  // namespace traits
QAQ_NAMESPACE_END
