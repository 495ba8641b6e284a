#pragma once
// Compile-time checks that a type can play a policy role. An unmatched
// combination fails with a static_assert that names what is missing.

#include <type_traits>

#include "qaq/config.hpp"

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

}  // namespace traits
QAQ_NAMESPACE_END
