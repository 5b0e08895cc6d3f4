
# Service names, asked of adoptd itself (`adoptctl list --names`) on the
# bus the command line names, after the verbs that take them.
function __fish_adoptctl_services
    set -l words (commandline -opc)
    set -l bus
    for i in (seq 2 (count $words))
        switch $words[$i]
            case --system --session '--address=*'
                set -a bus $words[$i]
            case --address
                set -a bus --address=$words[(math $i + 1)]
        end
    end
    command adoptctl $bus list --names 2>/dev/null
end

complete -c adoptctl -n "__fish_adoptctl_using_subcommand status start stop restart reload kill monitor" -f -a "(__fish_adoptctl_services)" -d service
