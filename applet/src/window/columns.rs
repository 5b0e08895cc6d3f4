//! The columns of the service list, each a factory of rows whose labels
//! are bound by expressions to the row's [`ServiceObject`], so a change of
//! the model shows without any code here running, and a sorter that
//! reads the same property.
//!
//! The list's items are `TreeListRow`s (instances under their template);
//! every expression starts at the list item, goes to its row, then to the
//! row's service.

use gtk::prelude::*;

use crate::{
    model::{ServiceObject, look, since},
    window::clock::Clock,
};

/// Adds the columns to `view`.
pub fn install(view: &gtk::ColumnView, clock: &Clock) {
    view.append_column(&name_column());
    view.append_column(&state_column());
    view.append_column(&number_column("Main PID", "main-pid", true));
    view.append_column(&number_column("Previous PID", "previous-pid", true));
    view.append_column(&number_column("Hand-offs", "handoffs", false));
    view.append_column(&number_column("Restarts", "restarts", false));
    view.append_column(&since_column(clock));
}

/// The expression of `property` of the service shown by a list item.
fn service_property(item: &gtk::ListItem, property: &str) -> gtk::PropertyExpression {
    item.property_expression("item")
        .chain_property::<gtk::TreeListRow>("item")
        .chain_property::<ServiceObject>(property)
}

/// `property` of a service, as a sorter expression (the sorter is given
/// services: the tree's row sorter unwraps the rows).
fn sort_key(property: &str) -> gtk::PropertyExpression {
    gtk::PropertyExpression::new(
        ServiceObject::static_type(),
        gtk::Expression::NONE,
        property,
    )
}

fn label() -> gtk::Label {
    let label = gtk::Label::new(None);
    label.set_xalign(0.0);
    label
}

fn name_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let expander = gtk::TreeExpander::new();
        let name = label();
        expander.set_child(Some(&name));
        item.property_expression("item")
            .bind(&expander, "list-row", Some(item));
        service_property(item, "name").bind(&name, "label", Some(item));
        item.set_child(Some(&expander));
    });
    let column = gtk::ColumnViewColumn::new(Some("Service"), Some(factory));
    column.set_expand(true);
    column.set_resizable(true);
    column.set_sorter(Some(&gtk::StringSorter::new(Some(sort_key("name")))));
    column
}

fn state_column() -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let state = label();
        let text = gtk::ClosureExpression::with_callback(
            [
                service_property(item, "state"),
                service_property(item, "summary"),
            ],
            |values| {
                let text = |index: usize| {
                    values
                        .get(index)
                        .and_then(|value| value.get::<String>().ok())
                        .unwrap_or_default()
                };
                state_text(&text(1), &text(2))
            },
        );
        text.bind(&state, "label", Some(item));
        service_property(item, "state")
            .chain_closure_with_callback(|values| {
                let state = values
                    .get(1)
                    .and_then(|value| value.get::<String>().ok())
                    .unwrap_or_default();
                vec!["state".to_owned(), look::look(&state).css_class.to_owned()]
            })
            .bind(&state, "css-classes", Some(item));
        item.set_child(Some(&state));
    });
    let column = gtk::ColumnViewColumn::new(Some("State"), Some(factory));
    column.set_resizable(true);
    column.set_fixed_width(170);
    column.set_sorter(Some(&gtk::NumericSorter::new(Some(sort_key("urgency")))));
    column
}

/// What the state column says: the symbol, the state's words, and for a
/// group how its instances are.
pub fn state_text(state: &str, summary: &str) -> String {
    let look = look::look(state);
    let words = look::words(state);
    if summary.is_empty() {
        format!("{} {words}", look.symbol)
    } else {
        format!("{} {words} ({summary})", look.symbol)
    }
}

/// A column of a `u32` property; 0 shows as a dash where it means "none".
fn number_column(title: &str, property: &'static str, zero_is_none: bool) -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(move |_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let number = label();
        number.set_xalign(1.0);
        service_property(item, property)
            .chain_closure_with_callback(move |values| {
                let number = values
                    .get(1)
                    .and_then(|value| value.get::<u32>().ok())
                    .unwrap_or_default();
                if number == 0 && zero_is_none {
                    "—".to_owned()
                } else {
                    number.to_string()
                }
            })
            .bind(&number, "label", Some(item));
        item.set_child(Some(&number));
    });
    let column = gtk::ColumnViewColumn::new(Some(title), Some(factory));
    column.set_resizable(true);
    column.set_sorter(Some(&gtk::NumericSorter::new(Some(sort_key(property)))));
    column
}

fn since_column(clock: &Clock) -> gtk::ColumnViewColumn {
    let factory = gtk::SignalListItemFactory::new();
    let clock = clock.clone();
    factory.connect_setup(move |_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let when = label();
        gtk::ClosureExpression::with_callback(
            [
                service_property(item, "since").upcast(),
                clock.property_expression("now").upcast(),
            ],
            |values| {
                let number = |index: usize| {
                    values
                        .get(index)
                        .and_then(|value| value.get::<u64>().ok())
                        .unwrap_or_default()
                };
                since::relative(number(1), number(2))
            },
        )
        .bind(&when, "label", Some(item));
        item.set_child(Some(&when));
    });
    let column = gtk::ColumnViewColumn::new(Some("Since"), Some(factory));
    column.set_resizable(true);
    column.set_fixed_width(110);
    // Most recent change first when sorted ascending would be surprising:
    // older first, like the timestamps.
    column.set_sorter(Some(&gtk::NumericSorter::new(Some(sort_key("since")))));
    column
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_column_says_the_state_in_words() {
        assert_eq!(state_text("failed", ""), "✖ failed");
        assert_eq!(
            state_text("failed", "1 failed, 2 running"),
            "✖ failed (1 failed, 2 running)"
        );
        assert_eq!(state_text("zzz", ""), "? unknown (zzz)");
    }
}
