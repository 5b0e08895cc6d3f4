
# Service names, asked of adoptd itself (`adoptctl list --names`) on the
# bus the command line names, after the verbs that take them. The words
# are split at blanks only: service names hold `@` and `:`, which bash
# would otherwise take for word breaks.
_adoptctl_services() {
    local line="${COMP_LINE:0:COMP_POINT}" words cur="" verb="" i bus=()
    read -ra words <<<"$line"
    if [[ "$line" != *[[:blank:]] && ${#words[@]} -gt 0 ]]; then
        cur="${words[-1]}"
        unset 'words[-1]'
    fi
    for ((i = 1; i < ${#words[@]}; i++)); do
        case "${words[i]}" in
            --address) bus+=(--address "${words[i + 1]}"); i=$((i + 1)) ;;
            --address=* | --system | --session) bus+=("${words[i]}") ;;
            -s | --signal) i=$((i + 1)) ;;
            -*) ;;
            *) [[ -z "$verb" ]] && verb="${words[i]}" ;;
        esac
    done
    local prev="${words[-1]}"
    case "$verb" in
        status | start | stop | restart | reload | kill | monitor)
            if [[ "$cur" != -* && "$prev" != --address && "$prev" != -s && "$prev" != --signal ]]; then
                # What bash replaces is the text after the last word break.
                local broken="${cur%"${cur##*[@:=]}"}" name
                COMPREPLY=()
                while IFS= read -r name; do
                    [[ "$name" == "$cur"* ]] && COMPREPLY+=("${name#"$broken"}")
                done < <(command adoptctl "${bus[@]}" list --names 2>/dev/null)
                return 0
            fi
            ;;
    esac
    _adoptctl "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _adoptctl_services -o nosort -o bashdefault -o default adoptctl
else
    complete -F _adoptctl_services -o bashdefault -o default adoptctl
fi
