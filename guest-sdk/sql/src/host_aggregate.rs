//! Host aggregates from SQL: a query of the one shape the host computes itself (`SELECT keys,
//! COUNT(*), SUM(v), AVG(v), MEDIAN(v) FROM t [WHERE col op literal AND ...] GROUP BY keys`),
//! translated into an aggregate request; anything else is refused with the shape it must have.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as Sql, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    SelectItem, SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::cleanroom::analysis::aggregate::{Comparison, Condition, Request, Statistic};

const SHAPE: &str = "a host aggregate is `SELECT keys, COUNT(*), SUM(v), AVG(v), MEDIAN(v) FROM t \
                     [WHERE col op literal AND ...] GROUP BY keys`";

fn bad(what: &str) -> String {
    format!("{what}: {SHAPE}")
}

/// A column named by an expression (`c`, `t.c`, `(c)`).
fn ident(e: &Sql) -> Option<String> {
    match e {
        Sql::Identifier(i) => Some(i.value.clone()),
        Sql::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        Sql::Nested(inner) => match inner.as_ref() {
            Sql::Identifier(i) => Some(i.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The aggregate request `sql` asks for.
pub(crate) fn translate(
    sql: &str,
    epsilon: Option<f64>,
    bounds: Option<(f64, f64)>,
) -> Result<Request, String> {
    let statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| format!("SQL error: {e}"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(bad("one SELECT statement"));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(bad("a plain SELECT"));
    };
    let [from] = select.from.as_slice() else {
        return Err(bad("exactly one table"));
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err(bad("a table by name"));
    };
    if !from.joins.is_empty() || select.having.is_some() {
        return Err(bad("no joins or HAVING"));
    }
    let group_by: Vec<String> = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs
            .iter()
            .map(|e| ident(e).ok_or_else(|| bad("GROUP BY columns by name")))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("GROUP BY columns by name")),
    };
    let (statistics, value) = statistics(&select.projection, &group_by)?;
    let filter = conditions(select.selection.as_ref())?;
    Ok(Request {
        table: name.to_string(),
        group_by,
        value,
        filter,
        computed: None,
        statistics,
        bounds,
        epsilon,
    })
}

/// The statistics the SELECT list asks for, and the one value column they are of.
fn statistics(
    projection: &[SelectItem],
    group_by: &[String],
) -> Result<(Vec<Statistic>, Option<String>), String> {
    let mut statistics = Vec::new();
    let mut value: Option<String> = None;
    for item in projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Err(bad("no wildcards")),
        };
        if let Some(column) = ident(expr) {
            if !group_by.contains(&column) {
                return Err(bad(&format!("{column} is neither grouped nor aggregated")));
            }
            continue;
        }
        let Sql::Function(f) = expr else {
            return Err(bad("columns and aggregates only"));
        };
        let FunctionArguments::List(list) = &f.args else {
            return Err(bad("aggregate functions with arguments"));
        };
        let args: Vec<Option<String>> = list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => ident(e),
                _ => None,
            })
            .collect();
        let mut on = |column: &Option<String>| -> Result<(), String> {
            let Some(column) = column else {
                return Err(bad("SUM, AVG and MEDIAN of a column"));
            };
            match &value {
                Some(v) if v != column => Err(bad("one value column per aggregate")),
                _ => {
                    value = Some(column.clone());
                    Ok(())
                }
            }
        };
        let function = f.name.to_string().to_ascii_lowercase();
        statistics.push(match (function.as_str(), args.as_slice()) {
            ("count", [_]) => Statistic::Count,
            ("sum", [c]) => {
                on(c)?;
                Statistic::Sum
            }
            ("avg" | "mean", [c]) => {
                on(c)?;
                Statistic::Mean
            }
            ("median", [c]) => {
                on(c)?;
                Statistic::Quantile(0.5)
            }
            _ => return Err(bad(&format!("{function} is not supported"))),
        });
    }
    Ok((statistics, value))
}

/// The WHERE clause as conditions joined by AND.
fn conditions(selection: Option<&Sql>) -> Result<Vec<Condition>, String> {
    let mut filter = Vec::new();
    let mut pending: Vec<&Sql> = selection.into_iter().collect();
    while let Some(e) = pending.pop() {
        match e {
            Sql::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                pending.push(left);
                pending.push(right);
            }
            Sql::Nested(inner) => pending.push(inner),
            Sql::IsNull(c) | Sql::IsNotNull(c) => filter.push(Condition {
                column: ident(c).ok_or_else(|| bad("IS NULL of a column"))?,
                op: if matches!(e, Sql::IsNull(_)) {
                    Comparison::IsNull
                } else {
                    Comparison::NotNull
                },
                value: String::new(),
            }),
            Sql::BinaryOp { left, op, right } => {
                let column = ident(left).ok_or_else(|| bad("WHERE column op literal"))?;
                let literal = match right.as_ref() {
                    Sql::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                        Value::Number(n, _) => n.to_string(),
                        other => other.to_string(),
                    },
                    Sql::UnaryOp {
                        op: UnaryOperator::Minus,
                        expr,
                    } => format!("-{expr}"),
                    _ => return Err(bad("WHERE column op literal")),
                };
                let op = match op {
                    BinaryOperator::Eq => Comparison::Eq,
                    BinaryOperator::NotEq => Comparison::Ne,
                    BinaryOperator::Lt => Comparison::Lt,
                    BinaryOperator::LtEq => Comparison::Le,
                    BinaryOperator::Gt => Comparison::Gt,
                    BinaryOperator::GtEq => Comparison::Ge,
                    _ => return Err(bad("WHERE with = != < <= > >=")),
                };
                filter.push(Condition {
                    column,
                    op,
                    value: literal,
                });
            }
            _ => return Err(bad("WHERE conditions joined by AND")),
        }
    }
    Ok(filter)
}
