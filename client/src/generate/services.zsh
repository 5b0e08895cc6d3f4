
# Service names, asked of adoptd itself (`adoptctl list --names`) on the
# bus the command line names, after the verbs that take them.
(( $+functions[_adoptctl_services] )) ||
_adoptctl_services() {
    local -a bus services
    (( ${+opt_args[--address]} )) && bus+=(--address="${opt_args[--address]}")
    (( ${+opt_args[--system]} )) && bus+=(--system)
    (( ${+opt_args[--session]} )) && bus+=(--session)
    services=(${(f)"$(_call_program services command adoptctl ${bus} list --names 2>/dev/null)"})
    _wanted services expl service compadd -a services
}

