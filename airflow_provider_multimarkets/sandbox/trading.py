"""The sandbox's trading books: orders, positions, fills and capital flow, in every margin mode the spec documents.

One book per company, shared by the interfaces of every mode: full margin (trade type 1,
``CfdMM...``), isolated margin (2, ``OrderApiService``/``PositionApiService``/``CfdWBW...``),
cross-lever (3, ``CrossLever...``, orders through ``OrderApiService.addOrder``), spot (5,
``SpotOrderApiService``, orders through ``addOrder`` too) and stock (6, ``Stock...``). An order
placed in one interface shows up in that mode's order list, trade records, positions, closing
records and capital flow (``businessType`` 6 with sub-types 6001 open fee, 6002 close fee, 6004
close profit and loss; stock: 606 with 60601/60602/60603), as the spec lists them.

Handlers return plain values with the facts they know under the names the spec uses; the state
then shapes them into the interface's documented ``data`` (:meth:`Contract.shape`), so every
answer carries every documented field in its documented type. The body was already checked
against the request schema; handlers check the business rules (trade type, bizType, accounts,
positions, quantities) with the documented business codes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets.sandbox import data
from airflow_provider_multimarkets.sandbox.contract import BizError

if TYPE_CHECKING:
    from airflow_provider_multimarkets.sandbox.contract import Contract

THIRD_PARTY_ORDER_RE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
#: ``addMarketOrder`` bizTypes per variant (the vendor's OpenAPI): 1 market open, 2 market close,
#: 10 limit pending, 11 stop pending, 12 limit open (full margin), 13/14 aggregate limit open/close
#: (isolated margin)
FULL_ORDER_BIZ_TYPES = frozenset({1, 2, 10, 11, 12})
ISOLATED_ORDER_BIZ_TYPES = frozenset({1, 2, 10, 11, 13, 14})
CLOSING_ORDER_BIZ_TYPES = frozenset({2, 14})
PENDING_ORDER_BIZ_TYPES = frozenset({10, 11})
#: ``addOrder`` (cross-lever and spot): 1 market, 12 market by amount, 13 limit (pending)
LEVER_ORDER_BIZ_TYPES = frozenset({1, 12, 13})
#: ``StockOrderApiService.placeOrder``: 1 market buy, 2 market sell, 12 limit buy, 13 limit sell
STOCK_ORDER_BIZ_TYPES = frozenset({1, 2, 12, 13})
ORDER_PUSH_BIZ_TYPES = {
    1: "POSITION_OPEN",
    2: "POSITION_CLOSE",
    12: "ME_POSITION_LIMIT_OPEN",
    13: "ME_POSITION_LIMIT_OPEN",
    14: "ME_POSITION_LIMIT_CLOSE",
}
#: capital-flow bookings of a fill, as the spec's queryCapitalFlowList lists them
FLOW_TRADE, FLOW_OPEN_FEE, FLOW_CLOSE_FEE, FLOW_CLOSE_PROFIT = 6, 6001, 6002, 6004
STOCK_FLOW_TRADE, STOCK_FLOW_CREDIT, STOCK_FLOW_DEBIT, STOCK_FLOW_FEE = 606, 60601, 60602, 60603
FLOW_NAMES = {
    FLOW_TRADE: "Transaction",
    FLOW_OPEN_FEE: "Open position fee",
    FLOW_CLOSE_FEE: "Close position fee",
    FLOW_CLOSE_PROFIT: "Market close profit and loss",
    STOCK_FLOW_TRADE: "Transaction",
    STOCK_FLOW_CREDIT: "Transaction credit amount",
    STOCK_FLOW_DEBIT: "Transaction debit amount",
    STOCK_FLOW_FEE: "Transaction fee",
}
#: order status (order lists): 1 received (pending), 2 executed, 4 cancelled
STATUS_RECEIVED, STATUS_EXECUTED, STATUS_CANCELLED = 1, 2, 4
#: stock order status: 0 submitted, 2 all filled, 3 cancelled
STOCK_STATUS = {STATUS_RECEIVED: 0, STATUS_EXECUTED: 2, STATUS_CANCELLED: 3}

Handler = Callable[[Any, dict[str, Any], dict[str, str]], Any]


def _page_args(body: dict[str, Any]) -> tuple[int, int]:
    pages = []
    for name, default in (("current", 1), ("size", 20)):
        value = body.get(name, default)
        if value in (None, ""):
            value = default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise BizError("CFDWBWE000006", f"{name} has a wrong format (1 to 10000)", name)
        pages.append(value)
    return pages[0], pages[1]


def _sort(rows: list[dict[str, Any]], body: dict[str, Any], allowed: dict[str, str], default: str) -> None:
    """Sort ``rows`` by the body's ``sortFieldName`` (a documented name mapped to a row field) and
    ``sortType``: ``CFDWBWE000014``/``CFDWBWE000015`` as the error table documents them."""
    sort_type = str(body.get("sortType") or "desc").lower()
    if sort_type not in ("asc", "desc"):
        raise BizError("CFDWBWE000014", "sort order must be ascending or descending (asc or desc)", "sortType")
    name = str(body.get("sortFieldName") or default)
    if name not in allowed:
        raise BizError("CFDWBWE000015", f"sorting on {name} is not supported", name)
    key = allowed[name]
    rows.sort(key=lambda r: (r.get(key) is None, r.get(key) or 0), reverse=sort_type == "desc")


def _in_range(value: Any, start: Any, end: Any) -> bool:
    if value is None:
        return start is None and end is None
    return (start is None or value >= start) and (end is None or value < end)


#: filter values that mean "all" in the query bodies (-1: all directions/order types; 0: unrestricted)
_ALL = {"direction": (-1,), "orderType": (-1,), "businessType": (0,), "operate": (0,)}


def _given(body: dict[str, Any], name: str) -> Any:
    """The body's filter ``name``, or ``None`` when it is not given or means "all"."""
    value = body.get(name)
    if value is None or value == "" or value in _ALL.get(name, ()):
        return None
    return value


class TradingBooks:
    """Orders, positions, fills and capital flow of the simulated companies (mixed into the state)."""

    lock: threading.RLock
    contract: Contract
    orders: list[dict[str, Any]]
    positions: dict[int, dict[str, Any]]
    closed_positions: list[dict[str, Any]]
    withheld_trade_records: set[int]
    unmatched_trade_records: list[dict[str, Any]]
    symbols: dict[int, dict[str, Any]]
    prices: dict[int, float]
    leverage: dict[tuple[int, int, int], int]
    _next_order: int
    _next_position: int
    config: Any
    rng: Any

    # provided by the state
    def accounts_of(self, company_id: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def clock(self) -> float:
        raise NotImplementedError

    def publish(self, company_id: int, trade_type: str, msg_code: str, content: dict[str, Any]) -> int:
        raise NotImplementedError

    def page(self, biz_type: str, rows: list[Any], current: int, size: int, extra: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    # ---- the interfaces --------------------------------------------------------------------------

    def trading_endpoints(self) -> dict[str, Handler]:
        books: dict[str, Handler] = {
            # full margin (trade type 1)
            "tradeapi.app.CfdMMOrderApiService.addMarketOrder": lambda r, b, h: self._contract_order(r, b, 1),
            "tradeapi.app.OrderApiService.updatePboOrder": self._update_pending,
            "tradeapi.app.CfdMMOrderApiService.updateOrder": self._update_position,
            "tradeapi.app.CfdMMOrderApiService.queryHistoryCloseOrderList": self._closed_page,
            "tradeapi.app.CfdMMOrderApiService.setCrossLevelNum": self._set_leverage,
            "tradeapi.app.CfdMMOrderApiService.calculateMarketOrder": self._calculate,
            "tradeapi.app.CfdMMPositionApiService.queryPositionDetail": self._position_detail,
            "tradeapi.app.CfdMMOrderApiService.queryCapitalFlowList": self._flow_page,
            # isolated margin (2)
            "tradeapi.app.OrderApiService.addMarketOrder": lambda r, b, h: self._contract_order(r, b, 2),
            "tradeapi.app.CfdWBWOrderApiService.queryPBOOrderPage": self._pending_orders,
            "tradeapi.app.CfdWBWOrderApiService.updateOrder": self._update_position,
            "tradeapi.app.CfdWBWOrderApiService.queryOrderDetail": self._order_detail,
            "tradeapi.app.OrderApiService.queryOrderPage": self._order_page,
            "tradeapi.app.CfdWBWOrderApiService.queryHistoryCloseOrderList": self._closed_page,
            "tradeapi.app.OrderApiService.queryTradeRecordPage": self._trade_record_page,
            "tradeapi.app.PositionApiService.updateCrossLevelNum": self._set_leverage,
            "tradeapi.app.PositionApiService.updateOccupyTheMargin": self._update_margin,
            "tradeapi.app.OrderApiService.calculateMarketOrder": self._calculate,
            "tradeapi.app.OrderApiService.calculationBurstPrice": self._burst_price,
            "tradeapi.app.PositionApiService.queryPositionDetail": self._position_detail,
            "tradeapi.app.PositionApiService.queryPositionPage": self._position_page,
            "tradeapi.app.OrderApiService.queryCapitalFlowList": self._flow_page,
            "tradeapi.app.OrderApiService.closeTradePboOrder": self._cancel_order,
            "tradeapi.app.OrderApiService.checkOrderStatus": self._order_status,
            # cross-lever (3) and spot (5): orders through addOrder
            "tradeapi.app.OrderApiService.addOrder": self._lever_order,
            "tradeapi.app.CrossLeverOrderApiService.updateOrder": self._update_position,
            "tradeapi.app.CrossLeverOrderApiService.queryTradeRecordPage": self._trade_record_page,
            "tradeapi.app.CrossLeverOrderApiService.queryCapitalFlowList": self._flow_page,
            "tradeapi.app.SpotOrderApiService.queryCapitalFlowList": self._flow_page,
            "tradeapi.app.SpotOrderApiService.closeTradePboOrder": self._cancel_order,
            "tradeapi.app.SpotOrderApiService.queryOrderPage": self._order_page,
            "tradeapi.app.SpotOrderApiService.queryOrderDetail": self._order_detail,
            "tradeapi.app.SpotOrderApiService.queryTradeRecordPage": self._trade_record_page,
            # stock (6)
            "tradeapi.app.StockOrderApiService.placeOrder": self._stock_order,
            "tradeapi.app.StockOrderApiService.cancelOrder": self._cancel_order,
            "tradeapi.app.StockOrderApiService.queryOrderDetail": self._order_detail,
            "tradeapi.app.StockOrderApiService.queryOrderPage": self._order_page,
            "tradeapi.app.StockOrderApiService.queryPendingOrderList": self._stock_pending,
            "tradeapi.app.StockOrderApiService.checkOrder": self._stock_check,
            "tradeapi.app.StockOrderApiService.calculateOrder": self._stock_calculate,
            "tradeapi.app.StockOrderApiService.queryDealPage": self._trade_record_page,
            "tradeapi.app.StockOrderApiService.getPositionDealDetailList": self._position_deals,
            "tradeapi.app.StockPositionApiService.queryPositionDetail": self._position_detail,
            "tradeapi.app.StockPositionApiService.queryPositionPage": self._position_page,
            "tradeapi.app.StockOrderApiService.queryCapitalFlowList": self._flow_page,
            "tradeapi.app.StockAccountApiService.queryAccountAssetsInfo": self._stock_assets,
        }
        return {biz: self._in_mode(biz, handler) for biz, handler in books.items()}

    def _in_mode(self, biz_type: str, handler: Handler) -> Handler:
        def run(record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
            return handler(record, {**body, "_biz": biz_type}, headers)

        return run

    # ---- accounts, symbols, modes -------------------------------------------------------------------

    @staticmethod
    def _mode(body: dict[str, Any]) -> int:
        biz = str(body.get("_biz", ""))
        for marker, mode in (
            ("CfdMM", 1),
            ("CrossLever", 3),
            ("Spot", 5),
            ("Stock", 6),
        ):
            if f".{marker}" in biz:
                return mode
        if biz == "tradeapi.app.OrderApiService.updatePboOrder":
            return 1  # "should be filled with 1 under this gameplay"
        if biz == "tradeapi.app.OrderApiService.addOrder":
            return int(body.get("tradeType") or 3)
        return 2

    def _check_trade_type(self, body: dict[str, Any], *allowed: int) -> int:
        mode = self._mode(body)
        wanted = allowed or (mode,)
        trade_type = body.get("tradeType")
        if isinstance(trade_type, str) and trade_type.isdigit():  # the spot trade list types it as a string
            trade_type = int(trade_type)
        if trade_type is not None and trade_type not in wanted:
            raise BizError(
                "CFDWBWE000007", f"tradeType must be {' or '.join(map(str, wanted))} for this interface", "tradeType"
            )
        return int(trade_type) if trade_type is not None else wanted[0]

    def _account(self, record: Any, trade_type: int, body: dict[str, Any]) -> dict[str, Any]:
        accounts = [a for a in self.accounts_of(record.company_id) if a["tradeType"] == trade_type]
        if body.get("accountId") is not None:
            accounts = [a for a in accounts if a["accountId"] == body["accountId"]]
        if not accounts:
            raise BizError("CFDWBWE000007", "account not found for this tradeType")
        return accounts[0]

    def _symbol(self, symbol_id: Any, trade_type: int) -> dict[str, Any]:
        symbol = self.symbols.get(symbol_id)
        if symbol is None or symbol["tradeType"] != trade_type:
            raise BizError("CFDWBWE000013", "product not configured")
        return symbol

    # ---- placing orders -------------------------------------------------------------------------------

    def _contract_order(self, record: Any, body: dict[str, Any], trade_type: int) -> dict[str, Any]:
        """Both ``addMarketOrder`` variants: full margin (1) and isolated margin (2)."""
        isolated = trade_type == 2
        if body["tradeType"] != trade_type:
            raise BizError("CFDWBWE000007", f"tradeType must be {trade_type} for this interface", "tradeType")
        if not 10**12 <= body["requestTime"] < 10**13:
            raise BizError("CFDWBWE000006", "requestTime must be a 13-digit timestamp in milliseconds", "requestTime")
        if body.get("expireType") is not None and body["expireType"] not in (1, 2, 3, 4):
            raise BizError("CFDWBWE000007", "expireType must be 1 (day), 2 (week), 3 (30 days) or 4 (90 days)")
        if not str(body["requestPrice"]).isdigit():
            raise BizError("CFDWBWE000006", "requestPrice must be the price times 10^symbolDigits as an integer string")
        for name in ("stopLoss", "takeProfit"):
            if body.get(name) not in (None, "") and not str(body[name]).isdigit():
                raise BizError("CFDWBWE000006", f"{name} must be a price times 10^symbolDigits as an integer string")
        quantity = self._quantity(body["requestNum"])
        allowed = ISOLATED_ORDER_BIZ_TYPES if isolated else FULL_ORDER_BIZ_TYPES
        if body["bizType"] not in allowed or body["direction"] not in (1, 2):
            raise BizError("CFDWBWE000007", "parameter validation failed (bizType/direction)")
        for name in ("thirdPartyOrder", "source"):
            value = body.get(name)
            if value is not None and not THIRD_PARTY_ORDER_RE.match(value):
                raise BizError("CFDWBWE000006", f"{name} must be at most 255 characters of A-Z, a-z, 0-9 and _")
        if isolated and body["entryType"] not in (1, 2):
            raise BizError("CFDWBWE000007", "entryType must be 1 (quantity) or 2 (amount)")
        symbol = self._symbol(body["symbolId"], trade_type)
        if not symbol["inTradeTime"]:
            raise BizError("CFDWBWE000016", "outside trading hours; trading refused")
        by_amount = isolated and body["entryType"] == 2
        lots = self._lots_for_amount(symbol, quantity) if by_amount else self._lots(quantity)
        account = self._account(record, trade_type, body)
        if body["accountCurrency"] != account["currency"]:
            raise BizError("CFDWBWE000007", "accountCurrency does not match the account")
        if body["bizType"] in CLOSING_ORDER_BIZ_TYPES:
            self._closable(body, account, symbol, lots)
        return self.place_order(record, body, symbol, account, lots, trade_type=trade_type)

    @staticmethod
    def _quantity(text: Any) -> float:
        try:
            quantity = float(text)
        except (TypeError, ValueError):
            raise BizError("CFDWBWE000006", "requestNum has a wrong format", "requestNum") from None
        if quantity != quantity or quantity in (float("inf"), float("-inf")):
            raise BizError("CFDWBWE000006", "requestNum has a wrong format", "requestNum")
        return quantity

    @staticmethod
    def _lots(quantity: float) -> float:
        if not 0.01 <= quantity <= 100 or abs(round(quantity * 100) - quantity * 100) > 1e-6:
            raise BizError(
                "CFDWBWE000026", "quantity must be within %s-%s lots and a multiple of %s lots", "0.01,100,0.01"
            )
        return quantity

    def _lots_for_amount(self, symbol: dict[str, Any], amount: float) -> float:
        # by amount: requestNum is a notional in the account currency (the sandbox ignores FX)
        notional = self.prices[symbol["symbolId"]] * data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
        lots = int(amount / notional * 100 + 1e-9) / 100
        if not 0.01 <= lots <= 100:
            raise BizError(
                "CFDWBWE000026", "amount must buy within %s-%s lots (one lot is about %s)", f"0.01,100,{notional:.2f}"
            )
        return lots

    def _closable(self, body: dict[str, Any], account: dict[str, Any], symbol: dict[str, Any], lots: float) -> None:
        position_id = body.get("positionId")
        if position_id in (None, ""):
            raise BizError("CFDWBWE000005", "positionId must not be empty for a closing order", "positionId")
        position = self.positions.get(position_id)
        if (
            position is None
            or position["account_id"] != account["accountId"]
            or position["symbolId"] != symbol["symbolId"]
        ):
            raise BizError("CFDWBWE000007", "position not found (positionId of an open position of this account)")
        if body["direction"] == position["direction"]:
            raise BizError("CFDWBWE000007", "a closing order goes against the position's direction")
        if lots > position["lots"] + 1e-9:
            raise BizError("CFDWBWE000026", "closing quantity exceeds the position (%s lots)", f"{position['lots']:g}")

    def _lever_order(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``addOrder``: cross-lever (trade type 3) and spot (5) orders (the spec's text says 2, its
        tag and its siblings say the leveraged mode; isolated margin orders go through addMarketOrder)."""
        trade_type = self._check_trade_type(body, 3, 5)
        if not 10**12 <= body["requestTime"] < 10**13:
            raise BizError("CFDWBWE000006", "requestTime must be a 13-digit timestamp in milliseconds", "requestTime")
        if body["bizType"] not in LEVER_ORDER_BIZ_TYPES or body["direction"] not in (1, 2):
            raise BizError("CFDWBWE000007", "parameter validation failed (bizType 1, 12 or 13; direction 1 or 2)")
        if body["operationType"] not in (1, 2, 3):
            raise BizError("CFDWBWE000007", "operationType must be 1 (normal), 2 (auto borrow) or 3 (auto repay)")
        if not str(body["requestPrice"]).isdigit():
            raise BizError("CFDWBWE000006", "requestPrice must be the price times 10^symbolDigits as an integer string")
        symbol = self._symbol(body["symbolId"], trade_type)
        quantity = self._quantity(body["requestNum"])
        lots = self._lots_for_amount(symbol, quantity) if body["bizType"] == 12 else self._lots(quantity)
        account = self._account(record, trade_type, body)
        if body["accountCurrency"] != account["currency"]:
            raise BizError("CFDWBWE000007", "accountCurrency does not match the account")
        return self.place_order(record, body, symbol, account, lots, trade_type=trade_type)

    def _stock_order(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``StockOrderApiService.placeOrder``: shares bought or sold at market, or limit orders."""
        self._check_trade_type(body, 6)
        if body["bizType"] not in STOCK_ORDER_BIZ_TYPES or body["direction"] not in (1, 2):
            raise BizError("CFDWBWE000007", "parameter validation failed (bizType 1, 2, 12 or 13; direction 1 or 2)")
        if (body["bizType"] in (1, 12)) != (body["direction"] == 1):
            raise BizError("CFDWBWE000007", "bizType and direction disagree (buy: 1/12 with direction 1)")
        symbol = self._symbol(body["symbolId"], 6)
        if body["digits"] != symbol["symbolDigits"]:
            raise BizError("CFDWBWE000007", "digits must be the product's quote decimal places", "digits")
        shares = self._quantity(body["requestNum"])
        if shares <= 0 or shares != int(shares):
            raise BizError("CFDWBWE000026", "quantity must be within %s-%s shares and a multiple of %s", "1,100000,1")
        account = self._account(record, 6, body)
        if body["accountCurrency"] != account["currency"]:
            raise BizError("CFDWBWE000007", "accountCurrency does not match the account")
        if body["direction"] == 2:
            held = sum(
                p["lots"]
                for p in self.positions.values()
                if p["account_id"] == account["accountId"] and p["symbolId"] == symbol["symbolId"]
            )
            if shares > held + 1e-9:
                raise BizError("CFDWBWE000007", "not enough shares to sell")
        return self.place_order(record, body, symbol, account, shares, trade_type=6)

    def place_order(
        self,
        record: Any,
        body: dict[str, Any],
        symbol: dict[str, Any],
        account: dict[str, Any],
        lots: float,
        *,
        trade_type: int | None = None,
    ) -> dict[str, Any]:
        trade_type = int(trade_type if trade_type is not None else body["tradeType"])
        body = {k: v for k, v in body.items() if k != "_biz"}
        digits = symbol["symbolDigits"]
        biz = body["bizType"]
        if trade_type == 6:
            pending, closing = biz in (12, 13), body["direction"] == 2
        elif trade_type in (3, 5):
            pending, closing = biz == 13, False
        else:
            pending, closing = biz in PENDING_ORDER_BIZ_TYPES, biz in CLOSING_ORDER_BIZ_TYPES
        self._next_order += 1
        position: dict[str, Any] | None = None
        if pending:  # a pending order waits for its price: no fill, no position yet
            fill, position_id = "0", 0
        else:
            mid = self.prices[symbol["symbolId"]] * (1 + self.rng.uniform(-0.0005, 0.0005))
            self.prices[symbol["symbolId"]] = mid
            fill = f"{mid:.{digits}f}"
            if trade_type == 6:
                position = next(
                    (
                        p
                        for p in self.positions.values()
                        if p["account_id"] == account["accountId"] and p["symbolId"] == symbol["symbolId"]
                    ),
                    None,
                )
                if position is None and not closing:
                    self._next_position += 1
                    position_id = self._next_position
                else:
                    position_id = position["position_id"] if position else 0
            elif closing:
                position_id = body["positionId"]
                position = self.positions.get(position_id)
            elif trade_type == 5:
                position_id = 0  # spot: assets, not positions
            else:
                self._next_position += 1
                position_id = self._next_position
        order = {
            "orderId": self._next_order,
            "positionId": position_id,
            "tradeVolume": f"{lots:g}",
            "openPrice": position["openPrice"] if position and closing else fill,
            "executePrice": fill,
            "openDirection": position["direction"] if position and closing else body["direction"],
            "direction": body["direction"],
            "openOrClose": 2 if closing else 1,
            "symbolName": symbol["symbolName"],
            "symbolId": symbol["symbolId"],
            "stopLoss": body.get("stopLoss") or "0",
            "takeProfit": body.get("takeProfit") or "0",
            "digits": digits,
            "fee": "0",
            "interest": "0",
            "profit": "0",
            "source": body.get("source") or "OpenAPI",
        }
        now_ms = int(self.clock() * 1000)
        if position is not None and closing:
            sign = 1 if position["direction"] == 1 else -1
            size = lots * data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
            profit = sign * (float(fill) - float(position["openPrice"])) * size
            order["profit"] = f"{profit:.{account['digits']}f}"
            position["lots"] = round(position["lots"] - lots, 8)
            self.closed_positions.append(
                {
                    **position,
                    "close_order_id": self._next_order,
                    "close_price": fill,
                    "close_ms": now_ms,
                    "close_lots": lots,
                    "close_direction": body["direction"],
                    "close_biz_type": biz,
                    "profit": order["profit"],
                }
            )
            if position["lots"] <= 1e-9:
                del self.positions[position_id]
        elif position is not None and trade_type == 6:  # more shares of a held stock
            held = position["lots"] + lots
            position["openPrice"] = (
                f"{(float(position['openPrice']) * position['lots'] + float(fill) * lots) / held:.{digits}f}"
            )
            position["lots"] = held
        elif not pending and position_id:
            self.positions[position_id] = {
                "position_id": position_id,
                "order_id": self._next_order,
                "open_ms": now_ms,
                "third_party_order": body.get("thirdPartyOrder"),
                "account_id": account["accountId"],
                "company_id": record.company_id,
                "trade_type": trade_type,
                "symbolId": symbol["symbolId"],
                "direction": body["direction"],
                "lots": lots,
                "open_lots": lots,
                "openPrice": fill,
                "stopLoss": body.get("stopLoss") or "0",
                "takeProfit": body.get("takeProfit") or "0",
                "remark": body.get("remark") or "",
                "source": body.get("source") or "OpenAPI",
                "margin": self._margin(symbol, lots, float(fill), body.get("crossLevelNum")),
            }
        self.orders.append(
            {
                "request": dict(body),
                "response": order,
                "company_id": record.company_id,
                "account_id": account["accountId"],
                "created_ms": now_ms,
                "updated_ms": now_ms,
                "third_party_order": body.get("thirdPartyOrder"),
                "pending": pending,
                "trade_type": trade_type,
                "status": STATUS_RECEIVED if pending else STATUS_EXECUTED,
                "currency": account["currency"],
            }
        )
        push_type = str(trade_type)
        if pending:  # the vendor client refreshes its pending orders on this notice
            self.publish(record.company_id, push_type, "notice", {"tradeType": trade_type, "updateType": 2, "show": 0})
            return order
        content = self.trade_content(record.company_id, account, symbol, order, body, lots)
        delay = self.config.order_push_delay
        if delay > 0:  # the fill push arrives later than the order's answer
            timer = threading.Timer(delay, self._publish_locked, (record.company_id, push_type, "trade", content))
            timer.daemon = True
            timer.start()
        else:
            self.publish(record.company_id, push_type, "trade", content)
        return order

    def _publish_locked(self, company_id: int, trade_type: str, msg_code: str, content: dict[str, Any]) -> None:
        with self.lock:
            self.publish(company_id, trade_type, msg_code, content)

    @staticmethod
    def _margin(symbol: dict[str, Any], lots: float, price: float, leverage: Any) -> str:
        level = leverage if isinstance(leverage, int) and leverage > 0 else 100
        return f"{lots * data.CONTRACT_SIZES.get(symbol['symbolId'], 1) * price / level:.2f}"

    # ---- orders ---------------------------------------------------------------------------------------

    def _orders_of(self, company_id: int, trade_type: int) -> list[dict[str, Any]]:
        return [o for o in self.orders if o["company_id"] == company_id and o.get("trade_type", 2) == trade_type]

    def _filled(self, company_id: int, trade_type: int | None = None) -> list[dict[str, Any]]:
        return [
            o
            for o in self.orders
            if o["company_id"] == company_id
            and o.get("status", STATUS_EXECUTED) == STATUS_EXECUTED
            and not o.get("pending")
            and (trade_type is None or o.get("trade_type", 2) == trade_type)
        ]

    def order_record(self, placed: dict[str, Any]) -> dict[str, Any]:
        """An order under the names the order lists and details use (each keeps the ones it documents)."""
        request, response = placed["request"], placed["response"]
        symbol = self.symbols.get(request["symbolId"], {})
        status = placed.get("status", STATUS_RECEIVED if placed.get("pending") else STATUS_EXECUTED)
        trade_type = placed.get("trade_type", request.get("tradeType"))
        executed = status == STATUS_EXECUTED
        return {
            "id": response["orderId"],
            "orderId": response["orderId"],
            "pboId": str(response["orderId"]),
            "dealId": response["orderId"] + 5000 if executed else 0,
            "bizType": request["bizType"],
            "busiiType": request["bizType"],  # the spot/isolated details spell it so
            "type": request["bizType"],
            "direction": request["direction"],
            "status": STOCK_STATUS.get(status, status) if trade_type == 6 else status,
            "state": status,
            "customerGroupId": data.CUSTOMER_GROUP_ID,
            "userGroupId": data.CUSTOMER_GROUP_ID,
            "symbolId": request["symbolId"],
            "symbolName": response["symbolName"],
            "symbolCode": symbol.get("symbolCode"),
            "digits": response["digits"],
            "requestPrice": str(request["requestPrice"]),
            "requestNum": str(request["requestNum"]),
            "requestVolume": request["requestNum"],
            "contractSize": data.CONTRACT_SIZES.get(request["symbolId"], 1),
            "executePrice": response["executePrice"],
            "openPrice": response["openPrice"],
            "requestTime": request["requestTime"],
            "orderTime": placed["created_ms"],
            "executeTime": placed["created_ms"] if executed else None,
            "fee": response["fee"],
            "commission": response["fee"],
            "accountDigits": request.get("accountDigits"),
            "executeNum": response["tradeVolume"] if executed else "0",
            "cancelNum": request["requestNum"] if status == STATUS_CANCELLED else "0",
            "positionId": response["positionId"],
            "stopLoss": response["stopLoss"],
            "takeProfit": response["takeProfit"],
            "remark": request.get("remark") or "",
            "createTime": placed["created_ms"],
            "updateTime": placed.get("updated_ms", placed["created_ms"]),
            "source": request.get("source") or "OpenAPI",
            "thirdPartyOrder": request.get("thirdPartyOrder"),
            "tradeType": trade_type,
            "accountId": placed["account_id"],
            "accountCurrency": request.get("accountCurrency"),
            "expireType": request.get("expireType"),
            "crossLevelNum": request.get("crossLevelNum"),
            "interest": 0,
            "pnl": 0,
            "profit": response["profit"],
        }

    def _find_order(self, record: Any, body: dict[str, Any], key: str = "orderId") -> dict[str, Any]:
        wanted = body.get(key)
        mode = self._mode(body)
        for placed in self._orders_of(record.company_id, mode):
            if str(placed["response"]["orderId"]) == str(wanted):
                return placed
        raise BizError("CFDWBWE000007", f"order {wanted} not found", str(wanted))

    def _order_page(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """The order lists (isolated, spot, stock): newest first, filtered by what the body gives, paged."""
        trade_type = self._check_trade_type(body)
        current, size = _page_args(body)
        wanted_ids = {s.strip() for s in str(body.get("orderIds") or "").split(",") if s.strip()}
        start, end = body.get("executeStartTime"), body.get("executeEndTime")
        rows = []
        for placed in reversed(self._orders_of(record.company_id, trade_type)):
            row = self.order_record(placed)
            if any(
                _given(body, k) is not None and str(row.get(k)) != str(body[k])
                for k in (
                    "accountId",
                    "accountCurrency",
                    "bizType",
                    "direction",
                    "symbolId",
                    "positionId",
                    "thirdPartyOrder",
                )
            ):
                continue
            if _given(body, "status") is not None and row["status"] != body["status"]:
                continue
            if wanted_ids and str(row["id"]) not in wanted_ids:
                continue
            if (start is not None or end is not None) and not _in_range(row["requestTime"], start, end):
                continue
            rows.append(row)
        if trade_type == 6:
            _sort(
                rows,
                body,
                {
                    "request_time": "requestTime",
                    "id": "id",
                    "symbol_id": "symbolId",
                    "status": "status",
                    "create_time": "createTime",
                },
                "request_time",
            )
        return self.page(str(body["_biz"]), rows, current, size)

    def _order_detail(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body)
        return self.order_record(self._find_order(record, body))

    def _order_status(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        self._check_trade_type(body)
        placed = self._find_order(record, body)
        return placed.get("status", STATUS_EXECUTED)

    def _pending_orders(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """``queryPBOOrderPage``: the account's pending orders (the spec documents one object as data)."""
        trade_type = self._check_trade_type(body)
        pending = [
            self.order_record(o)
            for o in reversed(self._orders_of(record.company_id, trade_type))
            if o.get("status") == STATUS_RECEIVED
            and (not body.get("thirdPartyOrder") or o["request"].get("thirdPartyOrder") == body["thirdPartyOrder"])
        ]
        return pending[0] if pending else {}

    def _stock_pending(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
        self._check_trade_type(body, 6)
        return [
            self.order_record(o)
            for o in reversed(self._orders_of(record.company_id, 6))
            if o.get("status") == STATUS_RECEIVED
        ]

    def _cancel_order(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """Cancel a pending order (isolated aggregation mode, spot, stock)."""
        self._check_trade_type(body)
        placed = self._find_order(record, body)
        if placed.get("status") != STATUS_RECEIVED:
            raise BizError("CFDWBWE000007", "only a pending order can be cancelled")
        placed["status"] = STATUS_CANCELLED
        placed["updated_ms"] = int(self.clock() * 1000)
        trade_type = placed.get("trade_type", 2)
        self.publish(
            record.company_id, str(trade_type), "notice", {"tradeType": trade_type, "updateType": 2, "show": 0}
        )
        row = self.order_record(placed)
        return {**row, "leftover": row["requestNum"]}

    def _update_pending(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``updatePboOrder``: new stop loss, take profit, quantity or price of a pending order."""
        self._check_trade_type(body, 1)
        placed = self._find_order(record, body, "pboId")
        if placed.get("status") != STATUS_RECEIVED:
            raise BizError("CFDWBWE000007", "only a pending order can be modified", str(body["pboId"]))
        for name in ("stopLoss", "takeProfit", "requestNum", "requestPrice"):
            if body.get(name) is not None:
                value = body[name]
                text = f"{value:g}" if isinstance(value, float) else str(value)
                placed["request"][name] = text
                if name in ("stopLoss", "takeProfit"):
                    placed["response"][name] = text
        placed["updated_ms"] = int(self.clock() * 1000)
        return placed["response"]

    # ---- positions ----------------------------------------------------------------------------------

    def position_record(self, position: dict[str, Any], closed: dict[str, Any] | None = None) -> dict[str, Any]:
        """A position under the names the position lists and details use."""
        symbol = self.symbols.get(position["symbolId"], {})
        digits = symbol.get("symbolDigits", 2)
        order_id = position.get("order_id") or 0
        now = self.prices.get(position["symbolId"], float(position["openPrice"]))
        sign = 1 if position["direction"] == 1 else -1
        profit = (
            sign
            * (now - float(position["openPrice"]))
            * position["lots"]
            * data.CONTRACT_SIZES.get(position["symbolId"], 1)
        )

        def decimal(value: Any) -> str:
            text = str(value or "0")
            return f"{int(text) / 10**digits:.{digits}f}" if text.isdigit() else text

        closed = closed or {}
        return {
            "positionId": position["position_id"],
            "orderId": order_id,
            "dealId": order_id + 5000,
            "status": "2"
            if closed and position["lots"] <= 1e-9
            else ("3" if position["lots"] < position.get("open_lots", position["lots"]) else "1"),
            "direction": position["direction"],
            "symbolId": position["symbolId"],
            "symbolName": symbol.get("symbolName"),
            "symbolCode": symbol.get("symbolCode"),
            "openAccountDigits": 2,
            "openSymbolDigits": digits,
            "closeAccountDigits": 2,
            "closeSymbolDigits": digits,
            "openContractSize": data.CONTRACT_SIZES.get(position["symbolId"], 1),
            "openPrice": position["openPrice"],
            "openNum": f"{position.get('open_lots', position['lots']):g}",
            "openVolume": f"{position.get('open_lots', position['lots']):g}",
            "volume": f"{position['lots']:g}",
            "closePrice": closed.get("close_price", "0"),
            "closeNum": f"{closed.get('close_lots', 0):g}",
            "closeVolume": f"{closed.get('close_lots', 0):g}",
            "closeTime": closed.get("close_ms", 0),
            "closeFreeDigits": "2",
            "profit": closed.get("profit", f"{profit:.2f}"),
            "openMargin": position.get("margin", "0"),
            "margin": position.get("margin", "0"),
            "stopLoss": position.get("stopLoss", "0"),
            "takeProfit": position.get("takeProfit", "0"),
            "stopLossDecimal": decimal(position.get("stopLoss")),
            "takeProfitDecimal": decimal(position.get("takeProfit")),
            "remark": position.get("remark", ""),
            "openTime": position.get("open_ms"),
            "openFee": "0",
            "closeFee": "0",
            "minVolume": "0.01",
            "marginSetType": "1",
            "crossLevelNum": position.get("cross_level", 100),
            "source": position.get("source") or "OpenAPI",
            "thirdPartyOrder": position.get("third_party_order"),
            "accountId": position["account_id"],
            "tradeType": position.get("trade_type", 2),
        }

    def _positions_of(self, company_id: int, trade_type: int) -> list[dict[str, Any]]:
        return [
            p
            for _, p in sorted(self.positions.items(), reverse=True)
            if p["company_id"] == company_id and p.get("trade_type", 2) == trade_type
        ]

    def _find_position(self, record: Any, body: dict[str, Any]) -> dict[str, Any]:
        position = self.positions.get(body.get("positionId"))  # type: ignore[arg-type]
        if (
            position is None
            or position["company_id"] != record.company_id
            or position.get("trade_type", 2) != self._mode(body)
        ):
            raise BizError("CFDWBWE000008", "position not found", str(body.get("positionId")))
        return position

    def _position_page(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """The open positions (isolated, stock), newest first; the data is the page's array."""
        trade_type = self._check_trade_type(body)
        current, size = _page_args(body)
        start, end = body.get("startTime"), body.get("endTime")
        rows = []
        for position in self._positions_of(record.company_id, trade_type):
            row = self.position_record(position)
            if any(
                _given(body, k) is not None and str(row.get(k)) != str(body[k])
                for k in ("accountId", "orderId", "dealId", "symbolId", "thirdPartyOrder")
            ):
                continue
            if (start is not None or end is not None) and not _in_range(row["openTime"], start, end):
                continue
            rows.append(row)
        if body.get("sortFieldName") or body.get("sortType"):
            _sort(
                rows,
                body,
                {"orderId": "orderId", "openTime": "openTime", "symbolId": "symbolId", "pnl": "profit"},
                "openTime",
            )
        return self.page(str(body["_biz"]), rows, current, size)

    def _position_detail(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body)
        return self.position_record(self._find_position(record, body))

    def _update_position(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``updateOrder``: a position's stop loss and take profit (full margin, isolated, cross-lever)."""
        self._check_trade_type(body)
        if body.get("accountId") is None and not body.get("accountCurrency"):
            raise BizError("CFDWBWE000005", "accountId or accountCurrency must not be empty", "accountId")
        position = self._find_position(record, body)
        if str(position.get("order_id")) != str(body["orderId"]):
            raise BizError("CFDWBWE000007", "orderId is not the order of this position", str(body["orderId"]))
        for name in ("stopLoss", "takeProfit"):
            value = body.get(name)
            if value not in (None, ""):
                if not str(value).isdigit():
                    raise BizError(
                        "CFDWBWE000006", f"{name} must be a price times 10^symbolDigits as an integer string"
                    )
                position[name] = str(value)
        if body.get("remark") is not None:
            position["remark"] = body["remark"]
        return self.position_record(position)

    def _update_margin(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body, 2)
        position = self._find_position(record, body)
        try:
            change = float(body["occupyTheMargin"])
        except ValueError:
            raise BizError("CFDWBWE000006", "occupyTheMargin has a wrong format", "occupyTheMargin") from None
        margin = float(position.get("margin", "0")) + change
        if margin <= 0:
            raise BizError("CFDWBWE000007", "the margin would be zero or less", "occupyTheMargin")
        position["margin"] = f"{margin:.2f}"
        return {"crossLevelNum": position.get("cross_level", 100)}

    def _set_leverage(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``setCrossLevelNum`` / ``updateCrossLevelNum``: the customer's leverage on a product (the
        spec names the leverage field ``requestTime`` in the isolated variant; both are read)."""
        trade_type = self._check_trade_type(body)
        self._symbol(body["symbolId"], trade_type)
        level = body.get("crossLevelNum", body.get("requestTime"))
        if not isinstance(level, int) or not 1 <= level <= 500:
            raise BizError("CFDWBWE000029", "leverage above maximum (1 to 500)", "500")
        self.leverage[(record.company_id, trade_type, body["symbolId"])] = level
        for position in self._positions_of(record.company_id, trade_type):
            if position["symbolId"] == body["symbolId"]:
                position["cross_level"] = level
        return {"crossLevelNum": level}

    def _calculate(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``calculateMarketOrder``: the margin and fee an order would take, nothing placed."""
        trade_type = self._check_trade_type(body)
        symbol = self._symbol(body["symbolId"], trade_type)
        lots = self._lots(self._quantity(body["requestNum"]))
        price = self.prices[symbol["symbolId"]]
        digits = symbol["symbolDigits"]
        return {
            "fee": "0",
            "margin": self._margin(symbol, lots, price, body.get("crossLevelNum")),
            "calculatePrice": f"{price:.{digits}f}",
            "maintainMargin": "0.5",
            "calculateNum": f"{lots:g}",
            "evaluateProfit": "0",
            "evaluateLoss": "0",
            "evaluateClosePrice": f"{price * (0.5 if body['direction'] == 1 else 1.5):.{digits}f}",
        }

    def _burst_price(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body, 2)
        position = self._find_position(record, body)
        digits = self.symbols.get(position["symbolId"], {}).get("symbolDigits", 2)
        price = float(position["openPrice"]) * (0.5 if position["direction"] == 1 else 1.5)
        return {
            "evaluateClosePrice": f"{price:.{digits}f}",
            "evaluateProfit": "0",
            "evaluateLoss": "0",
            "evaluateNetPnl": "0",
        }

    def _closed_page(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """``queryHistoryCloseOrderList``: one record per close, with its profit; ``totalPnl`` over all."""
        trade_type = self._check_trade_type(body)
        current, size = _page_args(body)
        rows = []
        for closed in self.closed_positions:
            if closed["company_id"] != record.company_id or closed.get("trade_type", 2) != trade_type:
                continue
            row = {
                "symbolId": closed["symbolId"],
                "symbolName": self.symbols.get(closed["symbolId"], {}).get("symbolName"),
                "bizType": 2,
                "orderId": closed["close_order_id"],
                "openVolume": f"{closed.get('open_lots', closed['close_lots']):g}",
                "openPrice": closed["openPrice"],
                "closeVolume": f"{closed['close_lots']:g}",
                "closePrice": closed["close_price"],
                "takeProfit": closed.get("takeProfit") if closed.get("takeProfit") not in (None, "", "0") else "-",
                "stopLoss": closed.get("stopLoss") if closed.get("stopLoss") not in (None, "", "0") else "-",
                "closeTime": closed["close_ms"],
                "openTime": closed["open_ms"],
                "commission": "0",
                "profit": closed["profit"],
                "pnl": float(closed["profit"]),
                "interest": "0",
                "openDirection": closed["direction"],
                "closeDirection": closed["close_direction"],
                "source": closed.get("source") or "OpenAPI",
                "thirdPartyOrder": closed.get("third_party_order"),
                "accountId": closed["account_id"],
            }
            if _given(body, "symbolId") is not None and row["symbolId"] != body["symbolId"]:
                continue
            if body.get("thirdPartyOrder") and row["thirdPartyOrder"] != body["thirdPartyOrder"]:
                continue
            if not _in_range(row["openTime"], body.get("openStartTime"), body.get("openEndTime")):
                continue
            if not _in_range(row["closeTime"], body.get("closeStartTime"), body.get("closeEndTime")):
                continue
            rows.append(row)
        _sort(
            rows,
            body,
            {
                "pnl": "pnl",
                "openTime": "openTime",
                "closeTime": "closeTime",
                "orderId": "orderId",
                "symbolId": "symbolId",
            },
            "closeTime",
        )
        total = round(sum(r["pnl"] for r in rows), 8)
        return self.page(str(body["_biz"]), rows, current, size, {"totalPnl": total})

    # ---- fills ----------------------------------------------------------------------------------------

    def trade_record(self, placed: dict[str, Any]) -> dict[str, Any]:
        """A fill under the names the trade record and deal lists use (the required ones included:
        ``loanAmount``, ``outCurrency``, ``stopLoss``, ``takeProfit``, ``numberStatisticMode``)."""
        request, response = placed["request"], placed["response"]
        symbol = self.symbols.get(request["symbolId"], {})
        contract = data.CONTRACT_SIZES.get(request["symbolId"], 1)
        amount = float(response["tradeVolume"]) * contract * float(response["executePrice"] or 0)
        by_amount = request.get("entryType") == 2 or (placed.get("trade_type") in (3, 5) and request["bizType"] == 12)
        currency = request.get("accountCurrency") or placed.get("currency")
        return {
            "symbolId": request["symbolId"],
            "orderId": response["orderId"],
            "bizType": request["bizType"],
            "symbolName": response["symbolName"],
            "symbolCode": symbol.get("symbolCode"),
            "direction": request["direction"],
            "requestPrice": str(request["requestPrice"]),
            "originalRequestPrice": str(request["requestPrice"]),
            "requestNum": str(request["requestNum"]),
            "executePrice": response["executePrice"],
            "executeNum": response["tradeVolume"],
            "executeNumber": response["tradeVolume"],
            "executeTime": placed["created_ms"],
            "loanAmount": "0",
            "outCurrency": currency,
            "inCurrency": symbol.get("baseCurrency"),
            "stopLoss": response["stopLoss"],
            "takeProfit": response["takeProfit"],
            "commission": response["fee"],
            "profitLoss": response["profit"],
            "overnightInterest": "0",
            "numberStatisticMode": "2" if by_amount else "1",
            "accountCurrency": currency,
            "moneyAmountCurrency": currency,
            "dealId": response["orderId"] + 5000,
            "positionId": response["positionId"],
            "realExecuteNum": f"{float(response['tradeVolume']) * contract:g}",
            "executeMargin": "0",
            "executeAmount": f"{amount:.2f}",
            "tradeAmount": f"{amount:.2f}",
            "occupyMargin": "0",
            "source": request.get("source") or "OpenAPI",
            "thirdPartyOrder": request.get("thirdPartyOrder"),
            "accountId": placed["account_id"],
            "tradeType": placed.get("trade_type", request.get("tradeType")),
        }

    def _trade_record_page(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """The trade record / deal lists: one record per fill, filtered, sorted and paged."""
        trade_type = self._check_trade_type(body)
        current, size = _page_args(body)
        accounts = {a.strip() for a in str(body.get("accountIds") or "").split(",") if a.strip()}
        rows = [
            self.trade_record(o)
            for o in self._filled(record.company_id, trade_type)
            if o["response"]["orderId"] not in self.withheld_trade_records
        ]
        rows += [
            dict(r)
            for r in self.unmatched_trade_records
            if r.get("companyId", record.company_id) == record.company_id and r.get("tradeType", 2) == trade_type
        ]
        order_type = _given(body, "orderType")
        rows = [
            r
            for r in rows
            if all(
                _given(body, k) is None or str(r.get(k)) == str(body[k]) for k in ("symbolId", "direction", "bizType")
            )
            and (not accounts or str(r["accountId"]) in accounts)
            and _in_range(r["executeTime"], body.get("executeStartTime"), body.get("executeEndTime"))
            and (not body.get("thirdPartyOrder") or r["thirdPartyOrder"] == body["thirdPartyOrder"])
            and (order_type is None or str(order_type) in ("1", "3") or (str(order_type) == "2" and r["bizType"] == 2))
        ]
        if trade_type == 6:
            _sort(rows, body, {"execute_time": "executeTime", "id": "dealId", "symbol_id": "symbolId"}, "execute_time")
        else:
            _sort(
                rows,
                body,
                {"executeTime": "executeTime", "direction": "direction", "symbolId": "symbolId"},
                "executeTime",
            )
        account = self._account(record, trade_type, {})
        extra = {
            "accountId": account["accountId"],
            "companyId": record.company_id,
            "customerId": data.CUSTOMER_ID,
            "customerNo": data.CUSTOMER_NO,
            "bizTypeText": {str(k): v for k, v in ORDER_PUSH_BIZ_TYPES.items()},
            "lang": "en-US",
            "trace": "",
            "ip": "127.0.0.1",
        }
        return self.page(str(body["_biz"]), rows, current, size, extra)

    def _position_deals(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """``getPositionDealDetailList``: the fills of a stock position (the spec documents one object)."""
        self._check_trade_type(body, 6)
        position = self._find_position(record, body)
        fills = [
            self.trade_record(o)
            for o in self._filled(record.company_id, 6)
            if o["request"]["symbolId"] == position["symbolId"] and o["account_id"] == position["account_id"]
        ]
        return fills[-1] if fills else {}

    def _stock_check(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``checkOrder``: what a stock order would change, nothing placed."""
        self._check_trade_type(body, 6)
        symbol = self._symbol(body["symbolId"], 6)
        account = self._account(record, 6, body)
        held = sum(
            p["lots"]
            for p in self._positions_of(record.company_id, 6)
            if p["symbolId"] == symbol["symbolId"] and p["account_id"] == account["accountId"]
        )
        shares = self._quantity(body["requestNum"])
        after = held + shares if body["direction"] == 1 else held - shares
        return {
            "direction": body["direction"],
            "beforePositionNum": f"{held:g}",
            "afterPositionNum": f"{after:g}",
            "loanAmount": "0",
        }

    def _stock_calculate(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body, 6)
        symbol = self._symbol(body["symbolId"], 6)
        account = self._account(record, 6, body)
        held = sum(p["lots"] for p in self._positions_of(record.company_id, 6) if p["symbolId"] == symbol["symbolId"])
        can_buy = int(float(account["available"]) / self.prices[symbol["symbolId"]])
        return {
            "canClosePositionNum": f"{held:g}",
            "canSellNum": f"{held:g}",
            "canBuyNum": str(can_buy),
            "canLoanBuyNum": "0",
        }

    def _stock_assets(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        self._check_trade_type(body, 6)
        account = self._account(record, 6, body)
        if body["currencyCode"] != account["currency"]:
            raise BizError("CFDWBWE000025", "no account in this currency", body["currencyCode"])
        value = sum(p["lots"] * self.prices.get(p["symbolId"], 0.0) for p in self._positions_of(record.company_id, 6))
        return {
            **account,
            "assetsId": account["accountId"],
            "lockAmount": "0",
            "positionMarketValue": f"{value:.2f}",
            "positionBuyMarketValue": f"{value:.2f}",
            "positionSellMarketValue": "0.00",
            "pnl": "0",
            "liabilitiesPrincipal": "0",
            "warningMargin": "0",
            "maintainMargin": "0",
            "maxDayPurchasePower": account["available"],
            "maxNightPurchasePower": account["available"],
            "residualLiquidity": account["available"],
            "riskLevel": 1,
            "crossLevel": "1",
        }

    # ---- capital flow ---------------------------------------------------------------------------------

    def capital_flows(self, company_id: int, trade_type: int | None = None) -> list[dict[str, Any]]:
        """The account bookings of the fills, as the spec lists them: the fee of each fill (6001 open,
        6002 close), the realised profit of each close (6004); stock: 60602 debit / 60601 credit, 60603 fee."""
        flows = []
        for placed in self._filled(company_id, trade_type):
            response, request = placed["response"], placed["request"]
            kind = placed.get("trade_type", request.get("tradeType"))
            fee = float(response["fee"] or 0)
            if kind == 6:
                amount = float(response["tradeVolume"]) * float(response["executePrice"] or 0)
                sub = STOCK_FLOW_DEBIT if request["direction"] == 1 else STOCK_FLOW_CREDIT
                bookings = [(STOCK_FLOW_TRADE, sub, -amount if sub == STOCK_FLOW_DEBIT else amount)]
                bookings.append((STOCK_FLOW_TRADE, STOCK_FLOW_FEE, -fee))
            elif response.get("openOrClose") == 2:
                bookings = [
                    (FLOW_TRADE, FLOW_CLOSE_FEE, -fee),
                    (FLOW_TRADE, FLOW_CLOSE_PROFIT, float(response["profit"] or 0)),
                ]
            else:
                bookings = [(FLOW_TRADE, FLOW_OPEN_FEE, -fee)]
            for number, (business_type, sub_type, signed) in enumerate(bookings):
                amount = signed + 0.0  # no "-0.00"
                flows.append(
                    {
                        "id": response["orderId"] * 10 + number,
                        "remark": "",
                        "createTime": placed["created_ms"],
                        "updateTime": placed["created_ms"],
                        "createdBy": 0,
                        "updateBy": 0,
                        "version": 1,
                        "subjectId": placed["account_id"],
                        "bookkeepId": response["orderId"] * 10 + number,
                        "amountIn": f"{max(amount, 0.0) + 0.0:.2f}",
                        "amountOut": f"{max(-amount, 0.0) + 0.0:.2f}",
                        "amount": f"{amount:.2f}",
                        "status": 2,
                        "amountAfter": "0",
                        "businessType": business_type,
                        "businessType1": sub_type,
                        "customerNo": data.CUSTOMER_NO,
                        "digits": str(request.get("accountDigits", 2)),
                        "currency": request.get("accountCurrency") or placed.get("currency"),
                        "businessTypeName": FLOW_NAMES[business_type],
                        "businessType1Name": FLOW_NAMES[sub_type],
                        "accountId": placed["account_id"],
                        "orderId": response["orderId"],
                        "dealId": response["orderId"] + 5000,
                        "tradeType": kind,
                    }
                )
        return flows

    def _flow_page(self, record: Any, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """``queryCapitalFlowList`` of every mode: the account's bookings, newest first, paged."""
        trade_type = self._check_trade_type(body)
        current, size = _page_args(body)
        operate = _given(body, "operate")
        rows = [
            f
            for f in reversed(self.capital_flows(record.company_id, trade_type))
            if all(_given(body, k) is None or f.get(k) == body[k] for k in ("accountId", "businessType"))
            and body.get("status") in (None, 0, f["status"])
            and _in_range(f["createTime"], body.get("startTime"), body.get("endTime"))
            and (operate is None or (operate == 1) == (float(f["amountIn"]) > 0))
        ]
        return self.page(str(body["_biz"]), rows, current, size)

    # ---- pushes and scenarios -------------------------------------------------------------------------

    def trade_content(
        self,
        company_id: int,
        account: dict[str, Any],
        symbol: dict[str, Any],
        order: dict[str, Any],
        body: dict[str, Any],
        lots: float,
    ) -> dict[str, Any]:
        now = str(int(self.clock() * 1000))
        contract = data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
        return {
            "accountId": account["accountId"],
            "companyId": company_id,
            "bizType": ORDER_PUSH_BIZ_TYPES.get(body["bizType"], "POSITION_OPEN"),
            "customerId": data.CUSTOMER_ID,
            "paramMap": {
                "date": now,
                "orderType": "1",
                "symbolId": str(symbol["symbolId"]),
                "dealExecuteTime": now,
                "orderBizType": str(body["bizType"]),
                "orderId": str(order["orderId"]),
                "pendingId": "0",
                "dealId": str(order["orderId"] + 5000),
                "accountCurrency": account["currency"],
                "orderStatus": "2",
                "dealExecuteNum": f"{lots * contract:.1f}",
                "source": str(body.get("source") or "OpenAPI"),
                "dealPrice": order["executePrice"],
                "requestAmount": f"{lots:g}",
                "currency": account["currency"],
                "symbolName": symbol["symbolName"],
                "contractSize": str(contract),
                "commission": "0",
                "direction": str(body["direction"]),
                "dealAmount": f"{lots:g}",
                "accountId": str(account["accountId"]),
                "companyId": str(company_id),
                "positionId": str(order["positionId"]),
                "dealExecutePrice": order["executePrice"],
                "playType": str(body["tradeType"]),
                "orderDirection": str(body["direction"]),
                "symbolDigits": str(symbol["symbolDigits"]),
                "takeProfitMsg": "--",
                "stopLossMsg": "--",
            },
            "tradeType": body["tradeType"],
        }

    def synthetic_trade(self, company_id: int, trade_type: str) -> dict[str, Any]:
        """A trade push as if an order had been filled on another client (trade-stream mode)."""
        candidates = [s for s in self.symbols.values() if str(s["tradeType"]) == trade_type and s["inTradeTime"]]
        if not candidates:
            candidates = [s for s in self.symbols.values() if s["inTradeTime"]]
        symbol = self.rng.choice(candidates)
        account = next(
            (a for a in self.accounts_of(company_id) if str(a["tradeType"]) == trade_type),
            self.accounts_of(company_id)[0],
        )
        lots = self.rng.choice((0.01, 0.05, 0.1, 0.5, 1.0))
        direction = self.rng.choice((1, 2))
        body = {
            "bizType": 1,
            "direction": direction,
            "tradeType": int(trade_type) if trade_type.isdigit() else 2,
            "source": "H5",
        }
        digits = symbol["symbolDigits"]
        mid = self.prices[symbol["symbolId"]] * (1 + self.rng.uniform(-0.0005, 0.0005))
        self.prices[symbol["symbolId"]] = mid
        self._next_order += 1
        self._next_position += 1
        order = {"orderId": self._next_order, "positionId": self._next_position, "executePrice": f"{mid:.{digits}f}"}
        return self.trade_content(company_id, account, symbol, order, body, lots)

    def seed_discrepancy(self, kind: str, company_id: int, order_id: int | None = None) -> dict[str, Any]:
        """Make the books disagree, for reconciliation scenarios: ``missing_trade_record`` withholds the
        trade record of ``order_id`` (default: the last fill); ``unmatched_trade_record`` adds a trade
        record whose order does not exist."""
        with self.lock:
            if kind == "missing_trade_record":
                filled = self._filled(company_id)
                if order_id is None:
                    if not filled:
                        raise ValueError("no fill yet: place an order first")
                    order_id = int(filled[-1]["response"]["orderId"])
                self.withheld_trade_records.add(int(order_id))
                return {"kind": kind, "orderId": int(order_id)}
            if kind == "unmatched_trade_record":
                filled = self._filled(company_id)
                base = self.trade_record(filled[-1]) if filled else {}
                self._next_order += 1
                ghost = {
                    **base,
                    "orderId": self._next_order + 900_000,
                    "dealId": self._next_order + 905_000,
                    "executeTime": int(self.clock() * 1000),
                    "thirdPartyOrder": None,
                    "companyId": company_id,
                    "tradeType": base.get("tradeType", 2),
                }
                self.unmatched_trade_records.append(ghost)
                return {"kind": kind, "orderId": ghost["orderId"]}
        raise ValueError(f"unknown discrepancy {kind!r}: missing_trade_record or unmatched_trade_record")
