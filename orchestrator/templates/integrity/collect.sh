# orchestrator integrity collector (format 1).
#
# Sent on stdin over SSH as `sh -s -- PART [ROOT...]`, PART being one of
#   files ROOT...   sha256 of every regular file under the ROOTs, and every symbolic link's target
#   state           packages, users, groups, authorized_keys, cron, timers, units, ports, SUID/SGID
#   verify          dpkg --verify (the package database's own view; recorded, never trusted)
# The controller runs the parts in parallel over one connection. Needs only a POSIX shell and the
# base system's tools (find, sha256sum, sort, cut, awk, stat). Nothing is compared here and nothing
# is written on the host. Everything is a function called on the last line, so the shell has read
# the whole script before any command runs and no command can swallow the rest of it from stdin.
#
#   @@orchestrator:begin NAME
#   ...section lines...
#   @@orchestrator:end NAME RC
#
# File contents are printed after "@@orchestrator:file PATH", each line prefixed with "|".

begin() { printf '@@orchestrator:begin %s\n' "$1"; }
end() { printf '@@orchestrator:end %s %s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }
dump() {
    # dump FILE: the file's lines, each prefixed with "|" (a last line without newline included)
    printf '@@orchestrator:file %s\n' "$1"
    while IFS= read -r line || [ -n "$line" ]; do
        printf '|%s\n' "$line"
    done <"$1"
}
dump_tree() {
    # dump_tree PATH...: every regular file under the existing PATHs
    for p in "$@"; do
        [ -e "$p" ] || continue
        find "$p" -xdev -type f 2>/dev/null
    done | sort -u | while IFS= read -r f; do dump "$f"; done
}

orchestrator_collect() {
    LC_ALL=C
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    export LC_ALL PATH
    umask 077

    part=${1:-}
    [ $# -gt 0 ] && shift
    case "$part" in
        files) collect_files "$@" ;;
        state) collect_state ;;
        verify) collect_verify ;;
        *)
            printf 'orchestrator collector: unknown part %s (files|state|verify)\n' "$part" >&2
            return 2
            ;;
    esac
}

collect_files() {
    # Regular files: sha256 of each. Roots are the arguments (system paths plus the host's own).
    begin files
    rc=0
    for r in "$@"; do
        [ -e "$r" ] || { printf '@@orchestrator:missing %s\n' "$r"; continue; }
        find "$r" -xdev -type f -exec sha256sum {} + || rc=$?
    done
    end files "$rc"

    # Symbolic links under the same roots, with their targets (a planted link is a planted file).
    begin links
    rc=0
    for r in "$@"; do
        [ -e "$r" ] || continue
        if find "$r" -maxdepth 0 -printf '' >/dev/null 2>&1; then
            find "$r" -xdev -type l -printf '%p\t%l\n' || rc=$?
        else
            find "$r" -xdev -type l -exec sh -c 'for l do printf "%s\t%s\n" "$l" "$(readlink "$l")"; done' \
                sh {} + || rc=$?
        fi
    done
    end links "$rc"
}

collect_verify() {
    if have dpkg; then
        begin package_verify
        dpkg --verify 2>/dev/null
        end package_verify $?
    fi
}

collect_state() {
    begin meta
    printf 'format\t1\n'
    printf 'hostname\t%s\n' "$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)"
    printf 'uid\t%s\n' "$(id -u)"
    printf 'kernel\t%s\n' "$(uname -r)"
    end meta 0

    if have dpkg-query; then
        begin packages
        dpkg-query -W -f '${binary:Package}\t${Version}\t${db:Status-Abbrev}\n'
        end packages $?
    fi

    begin users
    dump /etc/passwd
    end users $?
    begin groups
    dump /etc/group
    end groups $?

    # authorized_keys: every home's .ssh/authorized_keys*, and sshd's AuthorizedKeysFile locations.
    begin authorized_keys
    akf=""
    if have sshd; then
        akf=$(sshd -T 2>/dev/null | awk 'tolower($1) == "authorizedkeysfile" { $1 = ""; print }')
    fi
    [ -n "$akf" ] || akf=".ssh/authorized_keys .ssh/authorized_keys2"
    printf '@@orchestrator:info authorizedkeysfile %s\n' "$akf"
    {
        {
            printf '%s\n' /root
            cut -d: -f6 /etc/passwd
        } | sort -u | while IFS= read -r home; do
            [ -d "$home" ] || continue
            for f in "$home"/.ssh/authorized_keys*; do
                [ -f "$f" ] && printf '%s\n' "$f"
            done
            for p in $akf; do
                case "$p" in
                    none | /*) ;;
                    *) [ -f "$home/$p" ] && printf '%s\n' "$home/$p" ;;
                esac
            done
        done
        for p in $akf; do
            case "$p" in
                /*)
                    dir=${p%%%*} # up to the first %-token: /etc/ssh/keys/%u -> /etc/ssh/keys/
                    if [ "$dir" = "$p" ]; then
                        [ -f "$p" ] && printf '%s\n' "$p"
                    else
                        dir=${dir%/*}
                        [ -d "$dir" ] && find "$dir" -xdev -type f 2>/dev/null
                    fi
                    ;;
            esac
        done
    } | sort -u | while IFS= read -r f; do dump "$f"; done
    end authorized_keys 0

    begin cron
    dump_tree /etc/crontab /etc/anacrontab /etc/cron.d /etc/cron.hourly /etc/cron.daily \
        /etc/cron.weekly /etc/cron.monthly /etc/cron.yearly /var/spool/cron
    end cron 0

    # Every unit file and its state, once (the controller picks timers and enabled units from it).
    if have systemctl; then
        begin unit_files
        systemctl list-unit-files --no-legend --no-pager 2>/dev/null
        end unit_files $?
    fi

    if have ss; then
        begin ports
        ss -ltnuH
        end ports $?
    else
        begin ports_proc
        for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
            [ -r "$f" ] && dump "$f"
        done
        end ports_proc 0
    fi

    # SUID/SGID files on the root file system and on other local file systems where they hide.
    begin suid
    roots=/
    rootdev=$(stat -c %d / 2>/dev/null)
    for d in /usr /var /home /opt /srv /boot /tmp /var/tmp /dev/shm; do
        [ -d "$d" ] || continue
        dev=$(stat -c %d "$d" 2>/dev/null) || dev=""
        [ -n "$rootdev" ] && [ "$dev" = "$rootdev" ] && continue
        roots="$roots $d"
    done
    # shellcheck disable=SC2086
    find $roots -xdev -type f \( -perm -4000 -o -perm -2000 \) -exec sha256sum {} +
    end suid $?
}
orchestrator_collect "$@" </dev/null
