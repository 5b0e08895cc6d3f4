# Builds adoptd and installs it, with everything the system needs to run
# it: binaries, the systemd units, the D-Bus policy, activation and
# interface files, the polkit action, man pages, shell completions,
# example services, the applet's desktop entries and the exporter's
# alerting rules.
#
#   make                          # cargo build --release (adoptctl static)
#   sudo make install             # into /usr/local; builds first if
#                                 # `make` did not (then root needs cargo)
#   make install PREFIX=/usr DESTDIR=/tmp/stage   # as a package does
#   make install APPLET=no        # without the GTK applet
#   make install EXPORTER=no      # without adoptd-exporter
#   make uninstall                # same variables as install
#
# The files the system's D-Bus, polkit and systemd read are installed
# where they read them for PREFIX: with PREFIX=/usr, in /usr/share and
# /usr/lib; otherwise the D-Bus policy goes to /etc/dbus-1/system.d (the
# bus reads /usr/share/dbus-1/system.d and /etc only) and the polkit
# action to /usr/share/polkit-1/actions (polkit reads nowhere else).
# /etc/adoptd/services and the applet's autostart entry are in /etc
# for every prefix: that is where adoptd and desktop sessions look.

PREFIX ?= /usr/local
DESTDIR ?=
APPLET ?= yes
EXPORTER ?= yes
CARGO ?= cargo
CARGO_TARGET_DIR ?= target

bindir = $(PREFIX)/bin
sbindir = $(PREFIX)/sbin
datadir = $(PREFIX)/share
mandir = $(datadir)/man
docdir = $(datadir)/doc/adoptd
# adoptd reads /etc/adoptd/services whatever its prefix.
sysconfdir = /etc
unitdir = $(PREFIX)/lib/systemd/system
dbus_policydir = $(if $(filter /usr,$(PREFIX)),/usr/share/dbus-1/system.d,/etc/dbus-1/system.d)
dbus_servicedir = $(datadir)/dbus-1/system-services
dbus_interfacedir = $(datadir)/dbus-1/interfaces
polkit_actiondir = /usr/share/polkit-1/actions
bash_completiondir = $(datadir)/bash-completion/completions
zsh_completiondir = $(if $(filter /usr,$(PREFIX)),$(datadir)/zsh/vendor-completions,$(datadir)/zsh/site-functions)
fish_completiondir = $(datadir)/fish/vendor_completions.d
applicationsdir = $(datadir)/applications
autostartdir = /etc/xdg/autostart

release = $(CARGO_TARGET_DIR)/release
# adoptctl is built on its own, linked statically (below).
packages = -p adoptd $(if $(filter yes,$(APPLET)),-p adoptd-applet) \
    $(if $(filter yes,$(EXPORTER)),-p adoptd-exporter)
binaries = $(release)/adoptd $(release)/adoptctl $(if $(filter yes,$(APPLET)),$(release)/adoptd-applet) \
    $(if $(filter yes,$(EXPORTER)),$(release)/adoptd-exporter)
exporter_docdir = $(datadir)/doc/adoptd-exporter
generated = $(CARGO_TARGET_DIR)/generated

INSTALL ?= install
INSTALL_PROGRAM = $(INSTALL) -m755
INSTALL_DATA = $(INSTALL) -m644

.PHONY: all build generated install uninstall

all: build

# adoptctl is linked with glibc's static libraries (crt-static, given to
# its binary's own crate only, so the rest of the build is shared): a
# one-shot command's start-up is most of its run, and loading libc, libm
# and libgcc_s at each start made `adoptctl status` about a quarter
# slower (docs/BENCHMARKS.md). It stays position-independent, so its
# addresses are still randomised. adoptctl looks no user or host up
# through NSS on a unix socket bus, the one case a static glibc handles
# less well.
define cargo_build
	$(CARGO) build --release --locked $(packages)
	$(CARGO) rustc --release --locked -p adoptctl --bin adoptctl -- -C target-feature=+crt-static
endef

build:
	$(cargo_build)

# Installing uses what `make` built, so that `sudo make install` needs
# no cargo; it builds only what is missing.
$(binaries) &:
	$(cargo_build)

# adoptctl(1) and the completions come from adoptctl's clap definition.
generated: $(binaries)
	mkdir -p $(generated)
	$(release)/adoptctl generate man > $(generated)/adoptctl.1
	$(release)/adoptctl generate completions bash > $(generated)/adoptctl.bash
	$(release)/adoptctl generate completions zsh > $(generated)/_adoptctl
	$(release)/adoptctl generate completions fish > $(generated)/adoptctl.fish
	sed 's|/usr/sbin/adoptd|$(sbindir)/adoptd|' systemd-units/adoptd.service \
	    > $(generated)/adoptd.service
	sed 's|/usr/bin/adoptd-exporter|$(bindir)/adoptd-exporter|' \
	    systemd-units/adoptd-exporter.service > $(generated)/adoptd-exporter.service

install: generated
	$(INSTALL) -d $(DESTDIR)$(sbindir) $(DESTDIR)$(bindir)
	$(INSTALL_PROGRAM) $(release)/adoptd $(DESTDIR)$(sbindir)/adoptd
	$(INSTALL_PROGRAM) $(release)/adoptctl $(DESTDIR)$(bindir)/adoptctl
	$(INSTALL) -d $(DESTDIR)$(sysconfdir)/adoptd/services
	$(INSTALL) -d $(DESTDIR)$(unitdir)
	$(INSTALL_DATA) $(generated)/adoptd.service $(DESTDIR)$(unitdir)/adoptd.service
	$(INSTALL) -d $(DESTDIR)$(dbus_policydir) $(DESTDIR)$(dbus_servicedir) \
	    $(DESTDIR)$(dbus_interfacedir) $(DESTDIR)$(polkit_actiondir)
	$(INSTALL_DATA) dbus/org.adoptd1.conf $(DESTDIR)$(dbus_policydir)/org.adoptd1.conf
	$(INSTALL_DATA) dbus/org.adoptd1.service $(DESTDIR)$(dbus_servicedir)/org.adoptd1.service
	$(INSTALL_DATA) dbus/org.adoptd1.xml $(DESTDIR)$(dbus_interfacedir)/org.adoptd1.xml
	$(INSTALL_DATA) dbus/org.adoptd1.policy $(DESTDIR)$(polkit_actiondir)/org.adoptd1.policy
	$(INSTALL) -d $(DESTDIR)$(mandir)/man1 $(DESTDIR)$(mandir)/man5 $(DESTDIR)$(mandir)/man8
	$(INSTALL_DATA) $(generated)/adoptctl.1 $(DESTDIR)$(mandir)/man1/adoptctl.1
	$(INSTALL_DATA) man/adoptd-service.5 $(DESTDIR)$(mandir)/man5/adoptd-service.5
	$(INSTALL_DATA) man/adoptd.8 $(DESTDIR)$(mandir)/man8/adoptd.8
	$(INSTALL) -d $(DESTDIR)$(bash_completiondir) $(DESTDIR)$(zsh_completiondir) \
	    $(DESTDIR)$(fish_completiondir)
	$(INSTALL_DATA) $(generated)/adoptctl.bash $(DESTDIR)$(bash_completiondir)/adoptctl
	$(INSTALL_DATA) $(generated)/_adoptctl $(DESTDIR)$(zsh_completiondir)/_adoptctl
	$(INSTALL_DATA) $(generated)/adoptctl.fish $(DESTDIR)$(fish_completiondir)/adoptctl.fish
	$(INSTALL) -d $(DESTDIR)$(docdir)/examples
	$(INSTALL_DATA) examples/*.toml $(DESTDIR)$(docdir)/examples/
	$(INSTALL_DATA) README.md docs/dbus-api.md $(DESTDIR)$(docdir)/
ifeq ($(APPLET),yes)
	$(INSTALL_PROGRAM) $(release)/adoptd-applet $(DESTDIR)$(bindir)/adoptd-applet
	$(INSTALL) -d $(DESTDIR)$(applicationsdir) $(DESTDIR)$(autostartdir)
	$(INSTALL_DATA) applet/data/org.adoptd1.Applet.desktop \
	    $(DESTDIR)$(applicationsdir)/org.adoptd1.Applet.desktop
	$(INSTALL_DATA) applet/data/org.adoptd1.Applet-autostart.desktop \
	    $(DESTDIR)$(autostartdir)/org.adoptd1.Applet.desktop
endif
ifeq ($(EXPORTER),yes)
	$(INSTALL_PROGRAM) $(release)/adoptd-exporter $(DESTDIR)$(bindir)/adoptd-exporter
	$(INSTALL_DATA) $(generated)/adoptd-exporter.service \
	    $(DESTDIR)$(unitdir)/adoptd-exporter.service
	$(INSTALL) -d $(DESTDIR)$(exporter_docdir)/examples
	$(INSTALL_DATA) exporter/README.md $(DESTDIR)$(exporter_docdir)/README.md
	$(INSTALL_DATA) exporter/prometheus/adoptd.rules.yml \
	    exporter/prometheus/adoptd.rules.test.yml $(DESTDIR)$(exporter_docdir)/examples/
endif

uninstall:
	rm -f $(DESTDIR)$(sbindir)/adoptd $(DESTDIR)$(bindir)/adoptctl \
	    $(DESTDIR)$(bindir)/adoptd-applet $(DESTDIR)$(bindir)/adoptd-exporter \
	    $(DESTDIR)$(unitdir)/adoptd.service $(DESTDIR)$(unitdir)/adoptd-exporter.service \
	    $(DESTDIR)$(dbus_policydir)/org.adoptd1.conf \
	    $(DESTDIR)$(dbus_servicedir)/org.adoptd1.service \
	    $(DESTDIR)$(dbus_interfacedir)/org.adoptd1.xml \
	    $(DESTDIR)$(polkit_actiondir)/org.adoptd1.policy \
	    $(DESTDIR)$(mandir)/man1/adoptctl.1 \
	    $(DESTDIR)$(mandir)/man5/adoptd-service.5 \
	    $(DESTDIR)$(mandir)/man8/adoptd.8 \
	    $(DESTDIR)$(bash_completiondir)/adoptctl \
	    $(DESTDIR)$(zsh_completiondir)/_adoptctl \
	    $(DESTDIR)$(fish_completiondir)/adoptctl.fish \
	    $(DESTDIR)$(applicationsdir)/org.adoptd1.Applet.desktop \
	    $(DESTDIR)$(autostartdir)/org.adoptd1.Applet.desktop
	rm -rf $(DESTDIR)$(docdir) $(DESTDIR)$(exporter_docdir)
	-rmdir $(DESTDIR)$(sysconfdir)/adoptd/services $(DESTDIR)$(sysconfdir)/adoptd 2>/dev/null
