# Sourced by the setup scripts (test.sh, reliability.sh): installs the Debian
# packages a script needs, only those missing, as root or through sudo, so a
# second run changes nothing.
#
#   source scripts/lib/system-packages.sh
#   ensure_system_packages cmake g++ catch2 ...

# Root runs commands directly; anyone else needs sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root or sudo to run: $*" >&2
        exit 1
    fi
}

ensure_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "warning: dpkg not found (not Debian?); assuming the packages are installed: $*" >&2
        return 0
    fi
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all present: $*"
        return 0
    fi
    echo "installing: ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
