//! The tray's D-Bus side, on a thread and a session-bus connection of its
//! own: `/StatusNotifierItem` (`org.kde.StatusNotifierItem`) and
//! `/MenuBar` (`com.canonical.dbusmenu`, the subset panels use), under the
//! name `org.kde.StatusNotifierItem-PID-1`, registered with
//! `org.kde.StatusNotifierWatcher` whenever one owns that name.
//!
//! A new [`Aggregate`] changes the properties, and each signal
//! (`NewStatus`, `NewIcon`, `NewToolTip`, `NewTitle`, `LayoutUpdated`) is
//! sent only when what it announces changed.

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use zbus::{
    Connection, OwnedObjectPath, OwnedVariant, Structure, Variant, connection::Builder,
    fdo::DBusProxy, interface, names::BusName, object_server::SignalEmitter,
};

use super::{Action, Aggregate};

pub const ITEM_PATH: &str = "/StatusNotifierItem";
pub const MENU_PATH: &str = "/MenuBar";
pub const WATCHER: &str = "org.kde.StatusNotifierWatcher";
const WATCHER_PATH: &str = "/StatusNotifierWatcher";

/// Starts the tray on its own thread. Aggregates are read from the
/// returned sender's other end; clicks go to `actions`. The thread ends
/// when the sender is dropped.
pub fn spawn(actions: mpsc::UnboundedSender<Action>) -> std::io::Result<watch::Sender<Aggregate>> {
    let (aggregates, incoming) = watch::channel(Aggregate::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tray".to_owned())
        .spawn(move || {
            if let Err(e) = runtime.block_on(run(incoming, actions)) {
                eprintln!("adoptd-applet: no tray icon: {e}");
            }
        })?;
    Ok(aggregates)
}

async fn run(
    mut incoming: watch::Receiver<Aggregate>,
    actions: mpsc::UnboundedSender<Action>,
) -> zbus::Result<()> {
    let aggregate = incoming.borrow_and_update().clone();
    let name = format!("org.kde.StatusNotifierItem-{}-1", std::process::id());
    let connection = Builder::session()
        .serve_at(
            ITEM_PATH,
            Item {
                aggregate: aggregate.clone(),
                actions: actions.clone(),
            },
        )
        .serve_at(
            MENU_PATH,
            Menu {
                aggregate,
                revision: 1,
                actions,
            },
        )
        .name(name.clone())
        .build()
        .await?;
    tokio::spawn(register_whenever_a_watcher_is_there(
        connection.clone(),
        name,
    ));
    while incoming.changed().await.is_ok() {
        let aggregate = incoming.borrow_and_update().clone();
        if let Err(e) = update(&connection, aggregate).await {
            eprintln!("adoptd-applet: tray icon: {e}");
        }
    }
    Ok(())
}

/// Registers now if a watcher is there, and again each time one appears.
async fn register_whenever_a_watcher_is_there(connection: Connection, name: String) {
    let result: zbus::Result<()> = async {
        let bus = DBusProxy::new(&connection).await?;
        let mut appeared = bus
            .receive_name_owner_changed_with_args(&[(0, WATCHER)])
            .await?;
        if bus
            .name_has_owner(BusName::try_from(WATCHER)?)
            .await
            .unwrap_or(false)
        {
            register(&connection, &name).await;
        }
        while let Some(signal) = appeared.next().await {
            if let Ok(args) = signal.args()
                && args.new_owner().is_some()
            {
                register(&connection, &name).await;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("adoptd-applet: tray icon: cannot follow {WATCHER}: {e}");
    }
}

async fn register(connection: &Connection, name: &str) {
    if let Err(e) = connection
        .call_method(
            Some(WATCHER),
            WATCHER_PATH,
            Some(WATCHER),
            "RegisterStatusNotifierItem",
            &(name,),
        )
        .await
    {
        eprintln!("adoptd-applet: tray icon: {WATCHER} refused it: {e}");
    }
}

async fn update(connection: &Connection, aggregate: Aggregate) -> zbus::Result<()> {
    let server = connection.object_server();
    let item = server.interface::<_, Item>(ITEM_PATH).await?;
    let before = {
        let mut item = item.get_mut().await;
        std::mem::replace(&mut item.aggregate, aggregate.clone())
    };
    let emitter = item.signal_emitter();
    if before.status != aggregate.status {
        Item::new_status(emitter, aggregate.status).await?;
    }
    if before.icon != aggregate.icon {
        Item::new_icon(emitter).await?;
    }
    if before.tooltip != aggregate.tooltip {
        Item::new_tool_tip(emitter).await?;
    }
    if before.title != aggregate.title {
        Item::new_title(emitter).await?;
    }
    let menu = server.interface::<_, Menu>(MENU_PATH).await?;
    let revision = {
        let mut menu = menu.get_mut().await;
        let changed = menu.aggregate.menu() != aggregate.menu();
        menu.aggregate = aggregate;
        if changed {
            menu.revision += 1;
            Some(menu.revision)
        } else {
            None
        }
    };
    if let Some(revision) = revision {
        Menu::layout_updated(menu.signal_emitter(), revision, 0).await?;
    }
    Ok(())
}

/// `org.kde.StatusNotifierItem`.
struct Item {
    aggregate: Aggregate,
    actions: mpsc::UnboundedSender<Action>,
}

type Pixmaps = Vec<(i32, i32, Vec<u8>)>;

#[interface(name = "org.kde.StatusNotifierItem")]
impl Item {
    #[zbus(property)]
    fn category(&self) -> &str {
        "SystemServices"
    }

    #[zbus(property)]
    fn id(&self) -> &str {
        "adoptd-applet"
    }

    #[zbus(property)]
    fn title(&self) -> String {
        self.aggregate.title.clone()
    }

    #[zbus(property)]
    fn status(&self) -> &str {
        self.aggregate.status
    }

    #[zbus(property)]
    fn window_id(&self) -> i32 {
        0
    }

    #[zbus(property)]
    fn icon_name(&self) -> &str {
        self.aggregate.icon
    }

    #[zbus(property)]
    fn icon_pixmap(&self) -> Pixmaps {
        Vec::new()
    }

    #[zbus(property)]
    fn overlay_icon_name(&self) -> &str {
        ""
    }

    #[zbus(property)]
    fn attention_icon_name(&self) -> &str {
        self.aggregate.icon
    }

    #[zbus(property)]
    fn tool_tip(&self) -> (String, Pixmaps, String, String) {
        (
            self.aggregate.icon.to_owned(),
            Vec::new(),
            self.aggregate.title.clone(),
            self.aggregate.tooltip.clone(),
        )
    }

    #[zbus(property)]
    fn item_is_menu(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn menu(&self) -> OwnedObjectPath {
        OwnedObjectPath::try_from(MENU_PATH).unwrap_or_default()
    }

    /// A click: opens or raises the status window.
    fn activate(&self, _x: i32, _y: i32) {
        self.actions.send(Action::Open).ok();
    }

    /// A middle click: the same.
    fn secondary_activate(&self, _x: i32, _y: i32) {
        self.actions.send(Action::Open).ok();
    }

    /// The host shows the menu of `Menu` itself.
    fn context_menu(&self, _x: i32, _y: i32) {}

    fn scroll(&self, _delta: i32, _orientation: &str) {}

    #[zbus(signal)]
    async fn new_title(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn new_icon(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn new_attention_icon(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn new_tool_tip(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn new_status(emitter: &SignalEmitter<'_>, status: &str) -> zbus::Result<()>;
}

/// `com.canonical.dbusmenu`: a flat menu under the root item 0.
struct Menu {
    aggregate: Aggregate,
    revision: u32,
    actions: mpsc::UnboundedSender<Action>,
}

type Properties = HashMap<String, OwnedVariant>;
type Layout = (i32, Properties, Vec<OwnedVariant>);

fn owned(value: Variant<'_>) -> OwnedVariant {
    OwnedVariant::try_from(value).unwrap_or_else(|_| OwnedVariant::from(false))
}

impl Menu {
    /// Every item's properties, the root's included.
    fn items(&self) -> Vec<(i32, Properties)> {
        let root: Properties = [(
            "children-display".to_owned(),
            owned(Variant::from("submenu")),
        )]
        .into();
        std::iter::once((0, root))
            .chain(self.aggregate.menu().into_iter().map(|(id, label)| {
                let mut properties = Properties::new();
                match label {
                    Some(label) => {
                        properties.insert("label".to_owned(), owned(Variant::from(label)));
                        properties.insert("enabled".to_owned(), owned(Variant::from(true)));
                    }
                    None => {
                        properties.insert("type".to_owned(), owned(Variant::from("separator")));
                    }
                }
                properties.insert("visible".to_owned(), owned(Variant::from(true)));
                (id, properties)
            }))
            .collect()
    }
}

fn only(mut properties: Properties, names: &[String]) -> Properties {
    if !names.is_empty() {
        properties.retain(|name, _| names.contains(name));
    }
    properties
}

#[interface(name = "com.canonical.dbusmenu")]
impl Menu {
    #[zbus(property)]
    fn version(&self) -> u32 {
        3
    }

    #[zbus(property)]
    fn status(&self) -> &str {
        "normal"
    }

    #[zbus(property)]
    fn text_direction(&self) -> &str {
        "ltr"
    }

    fn get_layout(
        &self,
        parent_id: i32,
        recursion_depth: i32,
        property_names: Vec<String>,
    ) -> zbus::fdo::Result<(u32, Layout)> {
        let mut items = self.items().into_iter();
        let Some((_, root)) = items.next() else {
            return Err(zbus::fdo::Error::Failed("no menu".to_owned()));
        };
        let children: Vec<(i32, Properties)> = items.collect();
        if parent_id != 0 {
            let Some((id, properties)) = children.into_iter().find(|(id, _)| *id == parent_id)
            else {
                return Err(zbus::fdo::Error::InvalidArgs(format!(
                    "no menu item {parent_id}"
                )));
            };
            return Ok((
                self.revision,
                (id, only(properties, &property_names), Vec::new()),
            ));
        }
        let children = if recursion_depth == 0 {
            Vec::new()
        } else {
            children
                .into_iter()
                .map(|(id, properties)| {
                    let child: Layout = (id, only(properties, &property_names), Vec::new());
                    owned(Variant::from(Structure::from(child)))
                })
                .collect()
        };
        Ok((self.revision, (0, only(root, &property_names), children)))
    }

    fn get_group_properties(
        &self,
        ids: Vec<i32>,
        property_names: Vec<String>,
    ) -> Vec<(i32, Properties)> {
        self.items()
            .into_iter()
            .filter(|(id, _)| ids.is_empty() || ids.contains(id))
            .map(|(id, properties)| (id, only(properties, &property_names)))
            .collect()
    }

    fn get_property(&self, id: i32, name: String) -> zbus::fdo::Result<OwnedVariant> {
        self.items()
            .into_iter()
            .find(|(item, _)| *item == id)
            .and_then(|(_, mut properties)| properties.remove(&name))
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("no {name} on item {id}")))
    }

    fn event(&self, id: i32, event_id: &str, _data: OwnedVariant, _timestamp: u32) {
        if event_id == "clicked"
            && let Some(action) = self.aggregate.action(id)
        {
            self.actions.send(action).ok();
        }
    }

    fn event_group(&self, events: Vec<(i32, String, OwnedVariant, u32)>) -> Vec<i32> {
        for (id, event_id, data, timestamp) in events {
            self.event(id, &event_id, data, timestamp);
        }
        Vec::new()
    }

    fn about_to_show(&self, _id: i32) -> bool {
        false
    }

    fn about_to_show_group(&self, _ids: Vec<i32>) -> (Vec<i32>, Vec<i32>) {
        (Vec::new(), Vec::new())
    }

    #[zbus(signal)]
    async fn layout_updated(
        emitter: &SignalEmitter<'_>,
        revision: u32,
        parent: i32,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn items_properties_updated(
        emitter: &SignalEmitter<'_>,
        updated: Vec<(i32, Properties)>,
        removed: Vec<(i32, Vec<String>)>,
    ) -> zbus::Result<()>;
}
